"""spark-submit jobs/build_features.py …: ``recsys features`` as a Spark job — silver → gold: id vocabularies,
confidence, split labels. Flags: ``recsys features --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("features")
