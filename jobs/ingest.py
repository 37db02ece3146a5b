"""spark-submit jobs/ingest.py --source DIR --warehouse DIR [--force]: raw dump → bronze + quarantine."""

import _bootstrap


def main() -> int:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--source", type=_bootstrap.Path)
    p.add_argument("--force", action="store_true")
    args = p.parse_args()

    from recsys.config import load_settings
    from recsys.ingest import ingest
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse, source=args.source)
    report = ingest(get_spark(settings.spark), settings.source, settings.warehouse, settings.ingest, force=args.force)
    return 1 if report.failed else 0


if __name__ == "__main__":
    _bootstrap.run(main)
