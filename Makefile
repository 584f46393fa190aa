# Every target creates .venv and installs the package first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_ARGS ?=
# pytest-xdist workers for `make test`: most tests wait on a subprocess, a server or a heartbeat, so
# two workers pay even on two cores. 0 runs the suite in one process. A file's tests share a worker
# (--dist loadfile), so one worker starts the one SLURM cluster (xdist_group is ignored under pytest 9.2).
TEST_WORKERS ?= auto
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint ui paper-tables report estimation-tables mlflow-server replication settings config-docs

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,slurm]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install repro with its dev and slurm extras

run: $(STAMP) ## the default sweep: two models, quick preset, bundled digits, CPU
	$(BIN)/python -m repro.train -m model=mobilenet_v2,resnet18 training=quick dataset.image_size=32
	@echo
	@echo "Open the runs with:  make ui"
	@$(BIN)/python -m repro.ui_url --uri sqlite:///mlflow.db --host $(MLFLOW_HOST) --port $(MLFLOW_PORT)

test: $(STAMP) ## the whole test suite (slow and SLURM tests included), on every core (TEST_WORKERS=0: one process)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

test-fast: $(STAMP) ## the tests not marked slow or slurm
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow and not slurm"

lint: $(STAMP) ## ruff, and the import contracts of .importlinter (the layers)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache

ui: $(STAMP) ## the MLflow UI on the embedded store; prints the URL of the experiment's energy view
	@$(BIN)/python -m repro.ui_url --uri sqlite:///mlflow.db --host $(MLFLOW_HOST) --port $(MLFLOW_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(MLFLOW_HOST) --port $(MLFLOW_PORT)

paper-tables: $(STAMP) ## the study's tables and figures from the published data, into paper/ (deterministic)
	$(BIN)/python -m repro.paper

report: $(STAMP) ## one self-contained HTML report: python -m repro.report [source=published|mlflow ...] (ARGS=...)
	$(BIN)/python -m repro.report $(ARGS)

replication: $(STAMP) ## RQ1 on this machine's CPU (about 30 min): experiment=replication_cpu, its tables into reports/replication_cpu/
	PYTHON=$(BIN)/python scripts/replication.sh replication_cpu reports/replication_cpu

settings: $(STAMP) ## batch size x precision on this machine's CPU (about 20 min idle): experiment=settings_cpu into paper/settings/cpu/mlflow.db
	mkdir -p paper/settings/cpu
	$(BIN)/python -m repro.train -m experiment=settings_cpu tracking.uri=sqlite:///paper/settings/cpu/mlflow.db

estimation-tables: $(STAMP) ## the energy estimator's validation tables into paper/estimation/ ((d) from paper/replication/cpu; deterministic)
	$(BIN)/python -m repro.estimate validate estimate.tracking_uri=sqlite:///paper/replication/cpu/mlflow.db estimate.experiment=replication_cpu

config-docs: $(STAMP) ## regenerate README.md's configuration reference from the schemas and group YAMLs
	$(BIN)/python -m repro.config_docs --write

mlflow-server: $(STAMP) ## a shared MLflow server for cluster sweeps: SQLite + artifacts under mlflow-server/ (MLFLOW_HOST, MLFLOW_PORT, MLFLOW_ARGS)
	MLFLOW_HOST=$(MLFLOW_HOST) MLFLOW_PORT=$(MLFLOW_PORT) MLFLOW=$(BIN)/mlflow scripts/mlflow_server.sh $(MLFLOW_ARGS)
