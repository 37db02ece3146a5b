"""spark-submit jobs/ingest.py --source DIR --warehouse DIR [--categories A,B] [--force]: raw dump → bronze +
quarantine (``--categories``: only those categories' files, as the DAG's ``categories`` param passes them)."""

import argparse

import _bootstrap


def categories(text: str) -> list[str]:
    """``"A, B,"`` → ``["A", "B"]``: the comma-separated form ``recsys.orchestration`` plans."""
    return [c.strip() for c in text.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--source", type=_bootstrap.Path, help="folder laid out like the dump (default from conf)")
    p.add_argument("--categories", type=categories, help="comma-separated, e.g. Appliances,All_Beauty (default: all)")
    p.add_argument("--force", action="store_true", help="re-ingest every file, even unchanged ones")
    return p


def main() -> int:
    args = build_parser().parse_args()

    from recsys.config import load_settings
    from recsys.ingest import ingest
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse, source=args.source)
    report = ingest(get_spark(settings.spark), settings.source, settings.warehouse, settings.ingest, force=args.force,
                    categories=args.categories)
    return 1 if report.failed else 0


if __name__ == "__main__":
    _bootstrap.run(main)
