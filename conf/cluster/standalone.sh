#!/usr/bin/env bash
# A real Spark standalone cluster on this machine: one master and N workers started with spark-class
# (the pip pyspark has no start-master.sh). Usage: standalone.sh up [WORKERS] | down | status
# Submit to it with: PATH=$PWD/.venv/bin:$PATH spark-submit --master spark://127.0.0.1:7077 jobs/<step>.py …
# Env: SPARK_MASTER_PORT (7077), SPARK_MASTER_WEBUI_PORT (8081), SPARK_WORKER_WEBUI_PORT (8081: workers take +1, +2…),
# WORKER_MEMORY (2g), CLUSTER_DIR (.spark-cluster: pids, logs, work dirs).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${VENV:-.venv}
state=${CLUSTER_DIR:-.spark-cluster}
export SPARK_HOME=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export PYSPARK_PYTHON=$(cd "$venv/bin" && pwd)/python
export SPARK_LOCAL_IP=127.0.0.1
master=spark://127.0.0.1:${SPARK_MASTER_PORT:-7077}

up() {
  local workers=${1:-2}
  mkdir -p "$state"
  nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 \
    --port "${SPARK_MASTER_PORT:-7077}" --webui-port "${SPARK_MASTER_WEBUI_PORT:-8081}" >"$state/master.log" 2>&1 &
  echo $! >"$state/master.pid"
  for _ in $(seq 60); do grep -q "I have been elected leader" "$state/master.log" 2>/dev/null && break; sleep 0.5; done
  for i in $(seq "$workers"); do
    nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$master" --cores 1 \
      --memory "${WORKER_MEMORY:-2g}" --work-dir "$state/work-$i" --webui-port $((${SPARK_WORKER_WEBUI_PORT:-8081} + i)) \
      >"$state/worker-$i.log" 2>&1 &
    echo $! >"$state/worker-$i.pid"
  done
  for _ in $(seq 120); do
    [ "$(grep -c "Successfully registered with master" "$state"/worker-*.log 2>/dev/null | awk -F: '{s+=$2} END {print s}')" -ge "$workers" ] && break
    sleep 0.5
  done
  echo "master $master (UI http://127.0.0.1:${SPARK_MASTER_WEBUI_PORT:-8081}), $workers workers; logs in $state/"
}

down() {
  for pid in "$state"/*.pid; do [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true; rm -f "$pid"; done
  echo "cluster stopped"
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  status) ls "$state"/*.pid 2>/dev/null || echo "not running" ;;
  *) echo "usage: $0 up [WORKERS] | down | status" >&2; exit 2 ;;
esac
