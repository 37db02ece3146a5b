#!/usr/bin/env bash
# Fetch the Delta Lake jars (the delta-spark wheel ships none) from Maven Central into $1 (default .jars/),
# keeping only what pyspark's own jars/ folder lacks so no second copy of Hadoop, Parquet, Jackson or
# Scala lands on the classpath. Maven's local repository (~/.m2) caches the downloads across clones.
# Also writes pyspark's conf/spark-defaults.conf so a plain `spark-submit jobs/<step>.py` has Delta.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-.jars}
python=${PYTHON:-.venv/bin/python}
spark_home=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp"
mkdir -p "$out.new"
for jar in "$tmp"/*.jar; do
  name=$(basename "$jar")
  base=$(echo "$name" | sed -E 's/-[0-9][^-]*(-[0-9]+)?\.jar$//')
  case "$base" in shims) continue ;; esac            # RoaringBitmap 0.9's companion; Spark ships RoaringBitmap 1.x
  if compgen -G "$spark_home/jars/$base-[0-9]*.jar" >/dev/null; then continue; fi
  cp "$jar" "$out.new/"
done
rm -rf "$out" && mv "$out.new" "$out"

abs=$(cd "$out" && pwd)
venv_python=$("$python" -c 'import sys; print(sys.executable)')
mkdir -p "$spark_home/conf"
{
  echo "# written by conf/maven/fetch-jars.sh: Delta for every spark-submit of this venv"
  echo "spark.jars $(ls "$abs"/*.jar | paste -sd, -)"
  echo "spark.sql.extensions io.delta.sql.DeltaSparkSessionExtension"
  echo "spark.sql.catalog.spark_catalog org.apache.spark.sql.delta.catalog.DeltaCatalog"
  echo "spark.sql.session.timeZone UTC"
  echo "spark.pyspark.python $venv_python"
  echo "spark.pyspark.driver.python $venv_python"
} > "$spark_home/conf/spark-defaults.conf"
echo "delta jars in $out: $(ls "$out" | wc -l) files"
