"""Benchmark deletions at Appliances size: erase 1,000 users and delete 1,000 items vs. a full republish.

Builds (once, reused with ``--reuse``) a synthetic dump of 2.1M reviews (1.8M users, 94K items) and runs the
pipeline on it, then times, on the same warehouse:

1. one deletion run — ``--erase`` users and ``--delete`` items in one batch, history purged (the default), the
   serving snapshot rebuilt (one is built first, as a running API would have);
2. one more batch of the same size with ``purge_history=False`` (MERGE + VACUUM only);
3. a full republish (``recsys.publish.publish``): the alternative to editing the published lists in place, then
   the serving snapshot of the new version, which a running API builds before it serves it (a deletion run
   builds its snapshot itself). Ratios of each deletion run to the republish alone and to the republish served.

``--base DIR`` starts the timed part from a copy of the warehouse a ``--build-only`` run left in ``DIR``.
Each deletion run reports seconds per table and rows removed (see ``recsys.catalog.apply``). Not a test: it takes
20+ minutes on 2 cores. Run it in the background:

    nohup .venv/bin/python benchmarks/bench_deletions.py --out /tmp/recsys-bench-deletions > bench.log 2>&1 &
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from common import add_dump_size, arguments, quiet_spark, save
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog import apply_drops, read_drops
from recsys.config import SynthSettings, load_settings


def _timed(label: str, results: dict, fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    results[label] = round(time.perf_counter() - started, 1)
    print(f"{label}: {results[label]} s", flush=True)
    return out


def _write_drops(spark, warehouse: Path, folder: Path, users: int, items: int, seed: int) -> tuple[Path, Path]:
    """Random users with published lists and random live items, as CSV drops."""
    folder.mkdir(parents=True, exist_ok=True)
    user_ids = [r[0] for r in T.read_table(spark, warehouse, C.USER_INDEX).select(C.USER_ID)
                .orderBy(F.rand(seed)).limit(users).collect()]
    item_ids = [r[0] for r in T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted"))
                .select(C.ITEM_ID).orderBy(F.rand(seed)).limit(items).collect()]
    user_drop, item_drop = folder / f"users-{seed}.csv", folder / f"items-{seed}.csv"
    user_drop.write_text("user_id,reason,requested_at\n"
                         + "".join(f"{u},bench,2026-01-01T00:00:00Z\n" for u in user_ids))
    item_drop.write_text("parent_asin,reason,requested_at\n"
                         + "".join(f"{i},bench,2026-01-01T00:00:00Z\n" for i in item_ids))
    return item_drop, user_drop


def _sizes(warehouse: Path) -> dict[str, dict]:
    return {str(p.relative_to(warehouse.resolve())): T.describe_table(p) for p in T.find_tables(warehouse)}


def main() -> int:
    p = arguments(__doc__)
    p.add_argument("--out", type=Path, default=Path("/tmp/recsys-bench-deletions"))
    add_dump_size(p)
    p.add_argument("--erase", type=int, default=1000)
    p.add_argument("--delete", type=int, default=1000)
    p.add_argument("--models", default="implicit_als,popularity",
                   help="models the pipeline trains (Spark ALS at 1.8M users alone takes longer than the rest)")
    p.add_argument("--driver-memory", default="8g")
    p.add_argument("--reuse", action="store_true", help="reuse the dump and warehouse of a previous run")
    p.add_argument("--build-only", action="store_true", help="stop after the dump and the pipeline")
    p.add_argument("--base", type=Path, default=None,
                   help="start from a copy of the warehouse of a --build-only run (its --out folder): the timed "
                        "part alone, repeatable on the same starting point")
    args = p.parse_args()

    from recsys.logs import setup_logging
    from recsys.pipeline import run_pipeline

    setup_logging()   # one line per step with its seconds: the per-step figures of the pipeline run
    from recsys.publish import publish
    from recsys.spark import get_spark
    from recsys.synth import generate

    settings = load_settings(warehouse=args.out / "wh", source=args.out / "src", reports=args.out / "reports")
    settings.spark = quiet_spark(settings.spark, master="local[2]", driver_memory=args.driver_memory,
                                 shuffle_partitions=8)
    settings.train = settings.train.model_copy(update={"models": args.models.split(",")})
    settings.synth = SynthSettings(users=args.users, items=args.items, reviews=args.reviews)
    spark = get_spark(settings.spark)
    results: dict[str, object] = {"users": args.users, "items": args.items, "reviews": args.reviews,
                                  "erase": args.erase, "delete": args.delete, "models": args.models}
    if args.base is not None:
        shutil.rmtree(settings.warehouse, ignore_errors=True)
        shutil.copytree(args.base / "wh", settings.warehouse, symlinks=True)
    elif not (args.reuse and (settings.warehouse / C.PUBLISHED).is_dir()):
        _timed("synth_seconds", results, generate, settings.source, settings.synth, progress=False)
        _timed("pipeline_seconds", results, run_pipeline, spark, settings)
    results["tables_before"] = _sizes(settings.warehouse)
    if args.build_only:
        print(json.dumps(results, indent=1, default=str))
        return 0

    from recsys.serve.snapshot import build_snapshot

    snapshots = settings.serve.resolved(settings.warehouse).snapshot_dir   # as a running API would have it
    _timed("snapshot_build_seconds", results, build_snapshot, settings.warehouse, snapshots)
    item_drop, user_drop = _write_drops(spark, settings.warehouse, args.out / "drops", args.erase, args.delete, 1)
    report = _timed("delete_and_erase_purged_seconds", results, apply_drops, spark, settings,
                    read_drops(items=item_drop, users=user_drop))
    results["purged_run"] = {k: report.get(k) for k in ("applied", "rows_removed", "seconds")}
    item_drop, user_drop = _write_drops(spark, settings.warehouse, args.out / "drops", args.erase, args.delete, 2)
    report = _timed("delete_and_erase_vacuum_only_seconds", results, apply_drops, spark, settings,
                    read_drops(items=item_drop, users=user_drop), purge_history=False)
    results["vacuum_only_run"] = {k: report.get(k) for k in ("applied", "rows_removed", "seconds")}
    _timed("same_drop_again_seconds", results, apply_drops, spark, settings,
           read_drops(items=item_drop, users=user_drop), purge_history=False)

    no_refit = settings.model_copy(update={"publish": settings.publish.model_copy(update={"refit_on_all": False})})
    _timed("full_republish_seconds", results, publish, spark, no_refit)
    # A running API serves a republished version once it has built its snapshot; a deletion run builds it itself.
    _timed("republish_snapshot_seconds", results, build_snapshot, settings.warehouse, snapshots)
    republish = results["full_republish_seconds"]
    served = republish + results["republish_snapshot_seconds"]
    for run in ("delete_and_erase_purged_seconds", "delete_and_erase_vacuum_only_seconds"):
        results[run.replace("_seconds", "_vs_republish")] = round(results[run] / republish, 2)
        results[run.replace("_seconds", "_vs_republish_served")] = round(results[run] / served, 2)
    results["tables_after"] = _sizes(settings.warehouse)
    (args.out / "bench_deletions.json").write_text(json.dumps(results, indent=1, default=str))
    figures = {k: v for k, v in results.items() if not k.startswith("tables")}     # committed without table sizes
    print(json.dumps(figures, indent=1, default=str))
    print("results:", save("deletions", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
