"""Ingest vs a bare Spark read + Delta write of the same raw files, side by side in one run.

- ours: ``recsys.ingest.ingest`` (file checks with sha256 and gzip integrity, per-line parse with quarantine
  reasons, count reconciliation, bronze + quarantine + ops/ingested_files);
- bare: ``spark.read.json`` of the same files (schema inferred; meta's free-form ``details`` map dropped, its keys
  are not valid Delta column names, which is one reason ingest parses lines itself) written to Delta.

    .venv/bin/python benchmarks/bench_ingest.py [--source DIR]   (default: a synthetic dump of --reviews lines)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common import arguments, save, spark_session, timer


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--source", type=Path, help="a folder laid out like the dump (default: generate one)")
    p.add_argument("--reviews", type=int, default=2_100_000)
    args = p.parse_args()

    from recsys.config import SynthSettings, load_settings
    from recsys.ingest import ingest
    from recsys.synth import generate

    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    source = args.source
    if source is None:
        source = scratch / "dump"
        generate(source, SynthSettings(users=int(args.reviews * 0.86), items=int(args.reviews * 0.045),
                                       reviews=args.reviews), progress=False)
    spark = spark_session()
    settings = load_settings(warehouse=scratch / "wh")
    files = sorted(str(f) for f in source.glob("*.jsonl*"))
    t: dict[str, float] = {}
    try:
        with timer(t, "ours"):
            report = ingest(spark, source, settings.warehouse, settings.ingest, force=True)
        with timer(t, "bare"):
            for kind, pattern in (("reviews", [f for f in files if not Path(f).name.startswith("meta_")]),
                                  ("items", [f for f in files if Path(f).name.startswith("meta_")])):
                frame = spark.read.json(pattern)
                if "details" in frame.columns:          # free-form keys ("Item Weight") are not Delta column names
                    frame = frame.drop("details")
                frame.write.format("delta").mode("overwrite").save(str(scratch / "bare" / kind))
        ratio = t["ours"] / t["bare"]
        lines = report.totals()["lines"]
        print(f"{lines:,} lines in {len(files)} files")
        print(f"  ours (checks, parse, quarantine, reconcile)  {t['ours']:>7.1f} s")
        print(f"  bare spark.read.json → Delta                 {t['bare']:>7.1f} s")
        print(f"  ours / bare                                  {ratio:.2f}×")
        print("results:", save("ingest", {"lines": lines, "files": len(files), "seconds": t,
                                          "ratios": {"ours_vs_bare": ratio}}))
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
