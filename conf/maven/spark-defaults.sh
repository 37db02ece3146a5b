#!/usr/bin/env bash
# Write pyspark's conf/spark-defaults.conf so every `spark-submit` of this venv has Delta, UTC and the venv's python.
# Paths are physical (symlinks resolved): the venv is shared by clones through a `.venv` link, and a path through
# one clone's link breaks every other clone once that clone is gone. Cheap, so `make install` runs it every time.
set -euo pipefail
jars=${1:-.venv/delta-jars}
python=${PYTHON:-.venv/bin/python}
spark_home=$("$python" -c 'import os, pyspark; print(os.path.realpath(os.path.dirname(pyspark.__file__)))')
venv_python=$("$python" -c 'import os, sys; print(os.path.join(os.path.realpath(sys.prefix), "bin", "python"))')
abs=$(cd "$jars" && pwd -P)
mkdir -p "$spark_home/conf"
{
  echo "# written by conf/maven/spark-defaults.sh: Delta for every spark-submit of this venv"
  echo "spark.jars $(ls "$abs"/*.jar | paste -sd, -)"
  echo "spark.sql.extensions io.delta.sql.DeltaSparkSessionExtension"
  echo "spark.sql.catalog.spark_catalog org.apache.spark.sql.delta.catalog.DeltaCatalog"
  echo "spark.sql.session.timeZone UTC"
  echo "spark.pyspark.python $venv_python"
  echo "spark.pyspark.driver.python $venv_python"
} > "$spark_home/conf/spark-defaults.conf"
