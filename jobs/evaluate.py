"""spark-submit jobs/evaluate.py …: ``recsys evaluate`` as a Spark job — metrics of every candidate of a run, promotion
of the best, the report. Flags: ``recsys evaluate --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("evaluate")
