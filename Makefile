# Two commands for a new user: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
JARS     := $(VENV)/delta-jars
LOCK_ID  := $(shell cat requirements.lock pyproject.toml conf/maven/pom.xml | sha256sum | cut -c1-12)
STAMP    := $(VENV)/.installed-$(LOCK_ID)

SCALE    ?= small
# seconds of model search in `make pipeline`/`make demo` (the configured default is 480; 0 = fixed parameters)
TUNING   ?= 120
DATA     ?= data/synthetic
WAREHOUSE?= warehouse
ifeq ($(SCALE),appliances)
  SYNTH_ARGS := --users 1800000 --items 94000 --reviews 2100000
else
  SYNTH_ARGS := --bad-line-rate 0.002
endif

.PHONY: help install jars demo test test-fast test-all synth pipeline tables serve bench clean cluster-up cluster-down

help:
	@echo "make demo   set up .venv + Delta jars, generate the synthetic dump, run the pipeline (SCALE=small|appliances)"
	@echo "make test   run the test suite (installs first if needed); make test-fast: the 2-minute inner loop"

## install: .venv from requirements.lock, the package itself, the Delta jars. Reused while the lock is unchanged.
install: $(STAMP)
	@$(BIN)/pip install -q --no-deps --no-build-isolation -e . >/dev/null
	@PYTHON=$(BIN)/python bash conf/maven/spark-defaults.sh $(JARS)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/python -c "import pyspark, delta, great_expectations, implicit, flask, airflow; print('stack ok: pyspark', pyspark.__version__)"
	PYTHON=$(BIN)/python bash conf/maven/fetch-jars.sh $(JARS)
	@rm -f $(VENV)/.installed-* && touch $@

jars:
	PYTHON=$(BIN)/python bash conf/maven/fetch-jars.sh $(JARS)

synth: install
	$(BIN)/recsys synth --out $(DATA) $(SYNTH_ARGS)

pipeline: install
	RECSYS_TUNING__BUDGET_SECONDS=$(TUNING) $(BIN)/recsys pipeline --source $(DATA) --warehouse $(WAREHOUSE)

demo: install synth pipeline
	@$(BIN)/recsys tables --warehouse $(WAREHOUSE)
	@echo
	@echo "Synthetic dump:  $(DATA)/"
	@echo "Delta tables:    $(WAREHOUSE)/   (list them: $(BIN)/recsys tables --warehouse $(WAREHOUSE))"
	@echo "Runs:            $(BIN)/recsys runs --warehouse $(WAREHOUSE)    report: reports/<run_id>/index.html"
	@echo "Serve the API:   $(BIN)/recsys serve --warehouse $(WAREHOUSE) --port 8000"

tables: install
	$(BIN)/recsys tables --warehouse $(WAREHOUSE)

## test: everything (what .ci/run calls). test-fast: the inner loop, no JVM, no pipeline, no Airflow run, no cluster
## (tests marked heavy by tests/conftest.py are deselected), under 2 minutes. test-all: everything with the full
## Hypothesis example counts for the Spark-backed properties (make test runs a quarter of them) and 3 race rounds.
## Two xdist workers (TEST_WORKERS=0 runs in one process); a file's tests stay on one worker, the longest files
## first (tests/conftest.py).
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: install
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(PARALLEL) -m "not heavy" $(PYTEST_ARGS)

test-all: install
	HYPOTHESIS_PROFILE=full RECSYS_TEST_RACE_ROUNDS=3 $(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

cluster-up: install          ## a Spark standalone master + 2 workers on 127.0.0.1:7077
	bash conf/cluster/standalone.sh up 2

cluster-down:
	bash conf/cluster/standalone.sh down

bench: install               ## every benchmark, ratios side by side (results in benchmarks/results/)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_train.py --size appliances --repeats 2
	$(BIN)/python benchmarks/bench_publish.py
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_api.py
	$(BIN)/python benchmarks/bench_quality.py      # GE gates vs the steps they guard, 2.1M reviews
	$(BIN)/python benchmarks/bench_deletions.py    # erase 1,000 users + delete 1,000 items vs a republish (20+ min)
	$(BIN)/python benchmarks/real_data.py
	$(BIN)/python benchmarks/bench_dag.py          # recsys_pipeline via dag.test() vs the same spark-submits

clean:
	rm -rf $(WAREHOUSE) $(DATA) reports .spark-checkpoints spark-warehouse

# --- Airflow (local development) -------------------------------------------------------------------------------------
# `make airflow`: airflow standalone (api-server, scheduler, dag-processor, triggerer) on SQLite in ./airflow_home, this
# repo's dags/, examples off, UI on http://127.0.0.1:8080 (user admin; password generated on first start into
# airflow_home/simple_auth_manager_passwords.json.generated). The spark_default connection comes from the environment:
# `make airflow SPARK_MASTER=spark://127.0.0.1:7077` submits the jobs to a standalone master instead of local[*].
AIRFLOW_HOME_DIR ?= $(CURDIR)/airflow_home
SPARK_MASTER     ?= local[*]
API_URL          ?=
AIRFLOW_ENV = AIRFLOW_HOME=$(AIRFLOW_HOME_DIR) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type":"spark","host":"$(SPARK_MASTER)"}' \
	AIRFLOW_VAR_RECSYS_API_URL='$(API_URL)' \
	RECSYS_WAREHOUSE=$(abspath $(WAREHOUSE)) RECSYS_SOURCE=$(abspath $(DATA)) PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: airflow airflow-test

airflow: install
	@mkdir -p $(AIRFLOW_HOME_DIR)
	@echo "Airflow UI: http://127.0.0.1:8080  user: admin  password: $(AIRFLOW_HOME_DIR)/simple_auth_manager_passwords.json.generated"
	@echo "DAGs from $(CURDIR)/dags; Spark master $(SPARK_MASTER); warehouse $(abspath $(WAREHOUSE)); Ctrl-C stops everything"
	@set -a && . conf/airflow/standalone.env && set +a && env $(AIRFLOW_ENV) $(BIN)/python dags/local_airflow.py   # DB + writer pool
	@set -a && . conf/airflow/standalone.env && set +a && env $(AIRFLOW_ENV) $(BIN)/airflow standalone

airflow-test: install
	$(BIN)/python -m pytest tests/test_dags.py $(PYTEST_ARGS)
