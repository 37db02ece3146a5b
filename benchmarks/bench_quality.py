"""Cost of the quality gates against the steps they guard, side by side: ingest (raw → bronze) vs the bronze gate,
build_silver vs the silver gate, on a synthetic dump of Appliances size (1.8M users, 94K items, 2.1M reviews).
Goal: each gate ≤ 25 % of its step. Great Expectations' import and context start-up are timed apart (a
spark-submit job pays them once per process).

    .venv/bin/python benchmarks/bench_quality.py [--workdir DIR] [--reviews 2100000] [--keep-dump]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import add_dump_size, arguments, save, spark_session, timer


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--workdir", type=Path, help="dump + warehouse go here (default: a new temporary folder)")
    add_dump_size(p)
    p.add_argument("--keep-dump", action="store_true", help="reuse <workdir>/raw if it is there")
    args = p.parse_args()

    from recsys.config import SynthSettings, load_settings
    from recsys.ingest import ingest
    from recsys.silver import build_silver
    from recsys.synth import generate

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    raw, warehouse = workdir / "raw", workdir / "warehouse"
    t: dict[str, float] = {}
    if not (args.keep_dump and raw.is_dir()):
        with timer(t, "synth"):
            generate(raw, SynthSettings(users=args.users, items=args.items, reviews=args.reviews), progress=False)
    shutil.rmtree(warehouse, ignore_errors=True)

    settings = load_settings(warehouse=warehouse, source=raw)
    spark = spark_session()
    with timer(t, "ingest"):
        report = ingest(spark, raw, warehouse, settings.ingest)
    with timer(t, "ge_start"):             # import + file context, once per process
        from recsys.quality import validate_layer
        from recsys.quality.gate import quality_settings
        from recsys.quality.runner import runner_for

        quality = quality_settings(settings)
        runner_for(quality.quality_root(warehouse))
    with timer(t, "bronze_gate"):
        bronze = validate_layer(spark, warehouse, "bronze", settings)
    with timer(t, "build_silver"):
        build_silver(spark, warehouse)
    with timer(t, "silver_gate"):
        silver = validate_layer(spark, warehouse, "silver", settings)

    rows = [("bronze", "ingest", t["ingest"], t["bronze_gate"], bronze),
            ("silver", "build_silver", t["build_silver"], t["silver_gate"], silver)]
    print(f"\n{'gate':<8} {'step':<13} {'step s':>8} {'gate s':>8} {'gate/step':>10}  expectations  passed")
    for layer, step_name, step_s, gate_s, result in rows:
        print(f"{layer:<8} {step_name:<13} {step_s:>8.1f} {gate_s:>8.1f} {gate_s / step_s:>9.1%}  "
              f"{len(result.outcomes):>12}  {result.success}")
    print(f"GE import + context start-up (once per process): {t['ge_start']:.1f} s; "
          f"rows ingested: {report.totals()}; Data Docs: {silver.data_docs}")
    out = save("quality", {
        "dump": {"users": args.users, "items": args.items, "reviews": args.reviews, **report.totals()},
        "seconds": t,
        "ratios": {layer: round(gate_s / step_s, 4) for layer, _, step_s, gate_s, _ in rows},
        "expectations": {layer: len(result.outcomes) for layer, *_, result in rows},
        "passed": {layer: result.success for layer, *_, result in rows},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    print(f"results: {out}")


if __name__ == "__main__":
    main()
