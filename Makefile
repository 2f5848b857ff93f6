# Two commands matter on a fresh machine: `make run` (install, then the main job) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PYTHONWARNINGS := ignore
# Some images set PYTHONDONTWRITEBYTECODE=1: then every process (each test's daemon, serving process, code server)
# compiles every module it imports from source, seconds per process. Installing compiles the venv once; this lets the
# project's own modules be cached as well.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install home run test ui mlflow-ui bench lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e ".[orchestrator,dev]"
	touch $@

run: install
	$(BIN)/mlops run

# The persistent instance folder, with dagster.yaml linked in (the dagster CLI refuses a missing DAGSTER_HOME).
home: install
	$(BIN)/python -c "from mlops_platform.instance import ensure_home; ensure_home()"

# Two workers; each xdist group runs on one worker, and the groups start in collection order (the conftest puts the
# longest first), which xdist's default reordering by group size would undo.
test: lint home
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder
	$(BIN)/dagster definitions validate -w workspace.yaml
	cd $(CURDIR) && $(BIN)/dg check defs

ui: home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/data/mlflow/mlflow.db -h 127.0.0.1 -p 5000

bench: install
	for script in benchmarks/bench_*.py; do $(BIN)/python -m benchmarks.$$(basename $$script .py) || exit 1; done

# The import contracts (layers, no Dagster in plain libraries, no cycles) live in pyproject.toml.
lint: install
	$(BIN)/ruff check mlops_platform mlops_platform_tests benchmarks
	$(BIN)/lint-imports --no-logo
