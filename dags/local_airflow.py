"""A throwaway local Airflow for `make airflow`, the DAG tests and bench_dag: its environment and its database.

Not a DAG file (listed in ``.airflowignore``): Airflow glue that belongs beside the DAGs, not in the library.
Standard library at import; Airflow is imported only by :func:`migrate`, in the process that owns ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from recsys.orchestration import WRITER_POOL   # stdlib-only at import

DAGS = Path(__file__).resolve().parent
STANDALONE_ENV = DAGS.parent / "conf" / "airflow" / "standalone.env"


def local_airflow_env(home: Path, spark_master: str = "local[2]",
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a local Airflow: ``conf/airflow/standalone.env`` (what ``make airflow`` exports), ``home``
    as AIRFLOW_HOME, this DAG folder (also on PYTHONPATH, as a DAG bundle's root is for its files),
    ``spark_default`` → ``spark_master``."""
    env = dict(os.environ)
    for line in STANDALONE_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": spark_master}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(DAGS), env.get("PYTHONPATH", "")) if p),
    })
    env.update(extra or {})
    return env


def migrate() -> None:
    """What ``airflow db migrate`` + ``airflow pools set`` do, in this process (``AIRFLOW_HOME`` from the
    environment): the metadata DB, with the writer pool the DAGs need (a task in a missing pool never runs)."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    Pool.create_or_update_pool(WRITER_POOL, 1, "recsys jobs that write the warehouse, one at a time", False)


if __name__ == "__main__":
    migrate()
