#!/usr/bin/env bash
# Fetch the Delta Lake jars (the delta-spark wheel ships none) from Maven Central into $1 (default .jars/),
# keeping only what pyspark's own jars/ folder lacks so no second copy of Hadoop, Parquet, Jackson or
# Scala lands on the classpath. Maven's local repository (~/.m2) caches the downloads across clones.
# Then writes pyspark's conf/spark-defaults.conf (spark-defaults.sh) so a plain `spark-submit jobs/<step>.py` has Delta.
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

bash "$here/spark-defaults.sh" "$out"
echo "delta jars in $out: $(ls "$out" | wc -l) files"
