"""spark-submit jobs/train.py …: ``recsys train`` as a Spark job — train one (or more: ``--model`` repeats) candidate
model of a run and register it. Flags: ``recsys train --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("train")
