"""spark-submit jobs/ab_report.py …: ``recsys ab-report`` as a Spark job — A/B readout of conf monitor.ab into
reports/ab-<experiment>/. Flags: ``recsys ab-report --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("ab-report")
