"""spark-submit jobs/select.py …: ``recsys select`` as a Spark job — search the hyper-parameters of a run's models on
the validation split; the run's train step fits the winners. Flags: ``recsys select --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("select")
