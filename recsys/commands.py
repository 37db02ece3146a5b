"""The ``recsys`` commands: what each does (a thin call into the library) and its flags, written once.

A command returns what it did or raises; :class:`CommandFailed` is a verdict of "no" (a failed gate, files that
failed to ingest, an audit with findings), anything else an error. ``recsys`` (:mod:`recsys.cli`) runs one per
process under the writer lock; the ``spark-submit jobs/<script>`` entry points run the same; the local pipeline
runs them in order in one process through :func:`execute` (:mod:`recsys.pipeline`, :mod:`recsys.steps`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recsys.config import Settings
from recsys.constants import LAYERS
from recsys.strict import split_commas

Command = Callable[[argparse.Namespace, Settings], Any]
_COMMANDS: dict[str, Command] = {}
_WRITERS: dict[str, bool] = {}       # command -> may it create the warehouse (see recsys.lock)


def writer(name: str) -> bool | None:
    """None: command ``name`` does not write the warehouse; else whether it may create it."""
    return _WRITERS.get(name)


def run(name: str, args: argparse.Namespace, settings: Settings) -> Any:
    """The registered command ``name`` on parsed ``args``."""
    return _COMMANDS[name](args, settings)


def command(name: str, *, writes: bool = False, creates: bool = False) -> Callable[[Command], Command]:
    """Register a subcommand; ``writes``: it runs under the warehouse's writer lock (``creates``: and may make the
    warehouse folder, like ingest; the others refuse a warehouse that does not exist)."""
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        if writes or creates:
            _WRITERS[name] = creates
        return fn
    return register


class CommandFailed(Exception):
    """A command that ran but whose verdict is "no" (a failed gate, files that failed to ingest, an audit with
    findings): exit 1 after printing ``result``."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


def execute(name: str, argv: Sequence[str], settings: Settings) -> Any:
    """Run command ``name`` with ``argv`` (as a job would get them) in this process, on ``settings``, without
    taking the writer lock: for a caller that already holds it (``recsys pipeline``). Returns the result."""
    return run(name, build_parser().parse_args([name, *argv]), settings)


def spark_session(settings: Settings):
    from recsys.spark import get_spark

    return get_spark(settings.spark)


# ----------------------------------------------------------------------------------------------

@command("synth")
def _synth(args, settings: Settings) -> Any:
    from recsys.synth import generate

    synth = settings.synth.model_copy(update={k: v for k, v in {
        "users": args.users, "items": args.items, "reviews": args.reviews, "seed": args.seed,
        "categories": args.categories or None, "sequential": args.sequential or None,
    }.items() if v is not None})
    return generate(Path(args.out), synth, bad_line_rate=args.bad_line_rate, progress=not args.quiet).to_dict()


@command("ingest", creates=True)
def _ingest(args, settings: Settings) -> Any:
    """The ingest report; with silver built too (unless ``--bronze-only``) under ``silver``."""
    from recsys.ingest import ingest
    from recsys.silver import build_silver

    spark = spark_session(settings)
    report = ingest(spark, settings.source, settings.warehouse, settings.ingest, force=args.force,
                    categories=args.categories or None)
    out = report.to_dict()
    if report.failed:
        raise CommandFailed(f"{len(report.failed)} raw file(s) failed to ingest: "
                            + ", ".join(f["path"] for f in report.failed), out)
    if not args.bronze_only:
        out["silver"] = build_silver(spark, settings.warehouse)
    return out


@command("build-silver", writes=True)
def _build_silver(args, settings: Settings) -> Any:
    from recsys.silver import build_silver

    return build_silver(spark_session(settings), settings.warehouse)


@command("load-benchmark", creates=True)
def _load_benchmark(args, settings: Settings) -> Any:
    from recsys.benchmark_data import load_benchmark

    return load_benchmark(spark_session(settings), Path(args.path), settings.warehouse, args.format, args.category)


@command("features", writes=True)
def _features(args, settings: Settings) -> Any:
    from recsys.features import build_features

    return build_features(spark_session(settings), settings.warehouse, settings.features)


@command("train", writes=True)
def _train(args, settings: Settings) -> Any:
    from recsys import registry
    from recsys.train import train

    run_id = args.run_id or registry.new_run_id()
    params = json.loads(args.params) if args.params else None
    models = args.model or settings.train.models
    return [train(spark_session(settings), settings, m, run_id, params) for m in models]


@command("select", writes=True)
def _select(args, settings: Settings) -> Any:
    from recsys.selection.step import select_models

    return select_models(spark_session(settings), settings, args.run_id, args.models or None)


@command("tune", writes=True)
def _tune(args, settings: Settings) -> Any:
    from recsys import registry
    from recsys.selection.data import search_data
    from recsys.selection.step import search_model, summary

    spark = spark_session(settings)
    tuning = settings.tuning
    data = search_data(spark, settings.warehouse, max_users=tuning.max_users, seed=tuning.seed)
    budget = tuning.budget_seconds if args.budget is None else args.budget
    result = search_model(spark, settings, args.model, args.run_id or registry.new_run_id(), data,
                          budget_seconds=budget, study=args.study)
    return {"model": args.model, **{k: v for k, v in summary(result).items() if k != "trials"},
            "trials": len(result.trials)}


@command("evaluate", writes=True)
def _evaluate(args, settings: Settings) -> Any:
    from recsys.evaluate.runner import evaluate_run

    return evaluate_run(spark_session(settings), settings, args.run_id)


@command("publish", writes=True)
def _publish(args, settings: Settings) -> Any:
    """Write, gate and switch a version; ``--no-switch`` / ``--switch`` split it in two around a gate that runs
    as a step of its own (``recsys validate --layer published --version V``), as the DAGs do."""
    from recsys.publish import publish
    from recsys.quality import published_gate

    if args.switch and not args.version:
        raise ValueError("--switch needs --version (the version written by --no-switch)")
    spark = spark_session(settings)
    gated = not (args.switch or args.no_switch or args.no_gate)
    return publish(spark, settings, version=args.version, write=not args.switch, switch=not args.no_switch,
                   refit=args.refit, gate=published_gate(spark, settings) if gated else None)


@command("runs")
def _runs(args, settings: Settings) -> Any:
    from recsys.registry import best_per_model, list_runs

    if not settings.warehouse.is_dir():
        raise FileNotFoundError(f"warehouse not found: {settings.warehouse}")
    runs = [r for r in list_runs(spark_session(settings), settings.warehouse)
            if args.trials or r["stage"] != "trial"]   # model selection's trials: scored on valid, not test
    if args.json:
        print(json.dumps(runs, default=str))
        return None
    metric = settings.evaluate.primary_metric
    print(f"{'run_id':<30} {'model':<14} {'stage':<10} {metric:>9} {'train s':>8}")
    for r in runs:
        print(f"{r['run_id']:<30} {r['model']:<14} {r['stage']:<10} {r['metrics'].get(metric, float('nan')):>9.4f} "
              f"{r['train_seconds'] or 0:>8.2f}")
    print("best per model: " + ", ".join(f"{m}={r['metrics'][metric]:.4f} ({r['run_id']})"
                                         for m, r in sorted(best_per_model(runs, metric).items())))
    return None


@command("tables")
def _tables(args, settings: Settings) -> Any:
    from recsys.tables import describe_table, find_tables

    root = settings.warehouse
    if not root.is_dir():
        raise FileNotFoundError(f"warehouse not found: {root}")
    rows = [{"table": str(p.relative_to(root)), **describe_table(p)} for p in find_tables(root)]
    if args.json:
        return rows
    print(f"{'table':<28} {'version':>7} {'rows':>12} {'files':>6}")
    for r in rows:
        print(f"{r['table']:<28} {r['version']:>7} {r['rows']:>12,} {r['files']:>6}")
    return None


@command("metrics")
def _metrics(args, settings: Settings) -> Any:
    from recsys.evaluate.cli_metrics import run_metrics

    result = run_metrics(Path(args.predictions), Path(args.truth), args.k, args.engine)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return None


@command("serve")
def _serve(args, settings: Settings) -> Any:
    from recsys.serve.server import run_server

    run_server(settings.warehouse, port=args.port, workers=args.workers, connections=args.connections,
               settings=settings.serve, ab=settings.monitor.ab)
    return None


@command("indicators", writes=True)
def _indicators(args, settings: Settings) -> Any:
    from recsys.monitor.indicators import run_indicators

    result = run_indicators(spark_session(settings), settings)
    if args.json:
        print(json.dumps(result["indicators"], default=str))
        return None
    print(f"{'version':<28} {'variant':<10} {'impr':>7} {'ctr':>6} {'purch':>6} {'r2r':>6} {'scroll':>6} {'cov':>6}")
    for r in result["indicators"]:
        cells = [r[k] if r[k] is not None else float("nan")
                 for k in ("ctr", "purchase_rate", "rec_to_rec", "scroll_end_no_click", "coverage")]
        print(f"{r['version'] or '-':<28} {r['variant'] or '-':<10} {r['impressions']:>7} "
              + " ".join(f"{c:>6.3f}" for c in cells))
    return None


@command("simulate-traffic")
def _simulate_traffic(args, settings: Settings) -> Any:
    from recsys.monitor.simulate import Behaviour, FlaskClient, HttpClient, Simulator

    truth = Path(args.truth)
    if not (truth / "_truth").is_dir():
        raise FileNotFoundError(f"no _truth/ folder under {truth}: point --truth at a `recsys synth` output")
    if args.api:
        client = HttpClient(args.api)
    else:
        from recsys.serve.app import create_app

        client = FlaskClient(create_app(settings.warehouse, settings.serve, ab=settings.monitor.ab))
    return Simulator(client, truth, Behaviour(k=args.k), seed=args.seed).run(args.users, args.sessions)


@command("ab-report", writes=True)
def _ab_report(args, settings: Settings) -> Any:
    from recsys.monitor.report import run_ab_report

    return run_ab_report(spark_session(settings), settings)


@command("validate", writes=True)
def _validate(args, settings: Settings) -> Any:
    from recsys.quality import validate_layer

    if not settings.warehouse.is_dir():
        raise FileNotFoundError(f"warehouse not found: {settings.warehouse}")
    result = validate_layer(spark_session(settings), settings.warehouse, args.layer, settings, args.run_id,
                            version=args.version, tables=args.table)
    if not result.success:
        raise CommandFailed(result.message(), result.to_dict())
    return result.to_dict()


def _apply(args, settings: Settings, **drop) -> Any:
    from recsys.catalog import apply_drops, read_drops

    drops = read_drops(**drop)                 # a bad drop fails here, before Spark starts
    return apply_drops(spark_session(settings), settings, drops, purge_history=args.purge_history)


@command("delete-items", writes=True)
def _delete_items(args, settings: Settings) -> Any:
    return _apply(args, settings, items=args.file)


@command("erase-users", writes=True)
def _erase_users(args, settings: Settings) -> Any:
    return _apply(args, settings, users=args.file)


@command("apply-deletions", writes=True)
def _apply_deletions(args, settings: Settings) -> Any:
    if args.items or args.users:
        return _apply(args, settings, items=args.items, users=args.users)
    folder = args.drops or settings.deletions.drops_dir
    if folder is None:
        raise ValueError("give --drops DIR (or --items/--users FILE) or set deletions.drops_dir in the config")
    return _apply(args, settings, drops=folder)


@command("relist-items", writes=True)
def _relist_items(args, settings: Settings) -> Any:
    from recsys.catalog import relist_items

    return relist_items(spark_session(settings), settings, args.file)


@command("audit-deletions", writes=True)
def _audit_deletions(args, settings: Settings) -> Any:
    from recsys.audit import audit

    extra = [settings.quality.quality_root(settings.warehouse), *(args.logs or [])]   # GX results, job logs
    report = audit(settings.warehouse, drop=args.drop, api=args.api, extra=extra)
    if not report.ok:
        raise CommandFailed(f"{len(report.findings)} finding(s): deleted ids are still present", report.to_dict())
    return report.to_dict()


# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description="Recommendation batch system: one subcommand per step.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, warehouse: bool = True, source: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        if warehouse:
            p.add_argument("--warehouse", type=Path, help="warehouse root (default from conf: ./warehouse)")
        if source:
            p.add_argument("--source", type=Path, help="folder laid out like the dump")
        return p

    p = add("synth", "generate a synthetic dump in the Amazon Reviews 2023 format", warehouse=False)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--users", type=int)
    p.add_argument("--items", type=int)
    p.add_argument("--reviews", type=int)
    p.add_argument("--categories", type=split_commas, help="comma-separated, e.g. Appliances,All_Beauty")
    p.add_argument("--seed", type=int)
    p.add_argument("--bad-line-rate", type=float, help="share of review lines to break on purpose")
    p.add_argument("--sequential", action="store_true", help="planted next-item chains (for the session models)")
    p.add_argument("--quiet", action="store_true")

    p = add("ingest", "raw dump → bronze/quarantine → silver", source=True)
    p.add_argument("--force", action="store_true", help="re-ingest every file, even unchanged ones")
    p.add_argument("--bronze-only", action="store_true", help="stop after bronze/quarantine")
    p.add_argument("--categories", type=split_commas, help="only these categories' files, comma-separated (default: all)")
    add("build-silver", "bronze → silver (MERGE)")
    add("pipeline", "every step in order, locally", source=True)
    p = add("load-benchmark", "load MovieLens or an Amazon 2023 benchmark CSV straight into silver")
    p.add_argument("--format", required=True, choices=("movielens", "amazon-csv"))
    p.add_argument("--path", required=True, help="MovieLens folder, or the benchmark CSV file")
    p.add_argument("--category", help="category label (default: MovieLens / the CSV's file stem)")
    add("features", "silver → gold: id vocabularies, confidence, split labels")
    p = add("train", "train candidate models of a run and register them")
    p.add_argument("--model", action="append", help="model to train (repeatable; default: conf train.models)")
    p.add_argument("--run-id", help="run to add the models to (default: a new run)")
    p.add_argument("--params", help='JSON hyper-parameters, e.g. \'{"factors": 32}\'')
    p = add("select", "model selection: an Optuna search per model on the validation split (tuning's budget)")
    p.add_argument("--run-id", required=True, help="the run whose train step uses the winners")
    p.add_argument("--models", type=split_commas, help="comma-separated (default: conf train.models)")
    p = add("tune", "one model's Optuna search on the validation split (MAP@K), trials recorded in ops/runs")
    p.add_argument("--model", required=True)
    p.add_argument("--budget", type=float, help="seconds (default: conf tuning.budget_seconds)")
    p.add_argument("--run-id", help="run the trials are recorded under (default: a new run)")
    p.add_argument("--study", help="study to create or continue (default: <model>-<run id>)")
    p = add("evaluate", "evaluate every candidate of a run, promote the best, write the report")
    p.add_argument("--run-id", required=True)
    p = add("publish", "publish the production model's top-K tables as a new version")
    p.add_argument("--version", help="version label (default: a new timestamp); rerun with the same to retry")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-switch", action="store_true", help="write the version's rows only (validate, then --switch)")
    mode.add_argument("--switch", action="store_true", help="only make an already written --version current")
    p.add_argument("--no-gate", action="store_true", help="switch without the published quality gate")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="refit the production model on every split first (default from conf publish.refit_on_all)")
    p = add("runs", "list runs (params, metrics, stage) and the best per model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--trials", action="store_true", help="model selection's trials too (scored on valid)")
    p = add("tables", "each Delta table under the warehouse: version, rows, files")
    p.add_argument("--json", action="store_true")

    p = add("validate", "Great Expectations gate of one layer (exit 1 when an error expectation fails)")
    p.add_argument("--layer", required=True, choices=LAYERS)
    p.add_argument("--version", help="published layer: the version to validate (default: the current one)")
    p.add_argument("--run-id", help="stored with the results in ops/quality_results (default: a new id)")
    p.add_argument("--table", action="append", help="validate only this table of the layer (repeatable)")

    def deletion_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--purge-history", action=argparse.BooleanOptionalAction, default=None,
                       help="rewrite tables that lost erased users into fresh directories now "
                            "(default from conf deletions.purge_history: on)")

    p = add("delete-items", "delete catalog items everywhere downstream (drop: parent_asin,reason,requested_at)")
    p.add_argument("file", type=Path)
    deletion_flags(p)
    p = add("erase-users", "erase users from every table, file and the API (drop: user_id,reason,requested_at)")
    p.add_argument("file", type=Path)
    deletion_flags(p)
    p = add("apply-deletions", "apply every drop file of a folder (item deletions and user erasures)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--drops", type=Path, help="folder of drop files (default from conf deletions.drops_dir)")
    source.add_argument("--items", type=Path, help="item deletion drop (parent_asin,reason,requested_at)")
    source.add_argument("--users", type=Path, help="user erasure drop (user_id,reason,requested_at)")
    deletion_flags(p)
    p = add("relist-items", "undo item deletions because the catalog lists the items again (item drop format)")
    p.add_argument("file", type=Path)
    p = add("audit-deletions", "scan every file under the warehouse (and the API) for deleted/erased ids")
    p.add_argument("--drop", type=Path, help="search the plain ids of this drop (default: the ids in ops/deletions)")
    p.add_argument("--api", help="also ask the running API, e.g. http://127.0.0.1:8000")
    p.add_argument("--logs", type=Path, action="append", help="also scan this folder of job logs (repeatable)")

    p = add("metrics", "ranking metrics of prediction lists against truth lists", warehouse=False)
    p.add_argument("--predictions", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--engine", choices=("spark", "numpy"), default="numpy")
    p.add_argument("--json", action="store_true")

    p = add("indicators", "fold pending API events into ops/events, compute ops/indicators per version/variant")
    p.add_argument("--json", action="store_true")
    p = add("simulate-traffic", "drive the API with synthetic users following the planted clusters")
    p.add_argument("--truth", required=True, help="a `recsys synth --out` folder (reads its _truth/)")
    p.add_argument("--api", help="a running API, e.g. http://127.0.0.1:8000 (default: the app in-process)")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--sessions", type=int, default=2, help="sessions per user")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    add("ab-report", "A/B readout of conf monitor.ab (two-proportion tests, CIs) into reports/ab-<experiment>/")
    p = add("retrain", "incremental retrain: new raw files, production's family, promotion gate, publish if promoted",
            source=True)
    p.add_argument("--model", action="append", help="model to train (default: the production model's family)")

    p = add("serve", "serve the published recommendations over HTTP (gunicorn)")
    p.add_argument("--port", type=int, help="default from conf (serve.port: 8000)")
    p.add_argument("--workers", type=int, help="gunicorn gevent workers (default from conf)")
    p.add_argument("--connections", type=int, help="open connections per worker (default from conf)")
    return parser
