# Two commands set up everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros -type f) dbt_project/dbt_project.yml dbt_project/profiles.yml
export DO_NOT_TRACK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test test-fast quality quality-test dev bench docs clean-lake stop

# uv installs the environment in parallel (19 s here from nothing, against about 3.5 minutes with pip); it does not read pip's
# configuration, so it is handed pip's find-links (where a machine may keep a CPU build of torch). pip is
# the fallback wherever uv cannot run. --compile-bytecode: uv writes no .pyc by default, and where
# PYTHONDONTWRITEBYTECODE is set (this machine) no process ever does, so every kfs command, Dagster step and
# dbt run compiled Dagster and dbt from source again (importing the definitions: 18.8 s, against 9.9 s).
PIP_FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(addprefix --find-links ,$(PIP_FIND_LINKS)) -e ".[test]" \
		|| $(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

# dagster-dbt reads the manifest when the definitions load: build it once, and again when models change.
$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	KFS_LAKE=$(CURDIR)/lake KFS_WAREHOUSE=$(CURDIR)/.kfs/warehouse.duckdb $(BIN)/python -m orchestration.dbt_project
	@touch $(MANIFEST)

demo: $(STAMP) $(MANIFEST)
	$(BIN)/kfs demo

# Groups of tests (a module, or a test's own xdist_group) go to the two workers in the order tests/conftest.py
# gives them: modules with slow tests first, then the rest.
PYTEST_PARALLEL := -n 2 --dist loadgroup --no-loadscope-reorder

# Every test but the quality bar: the nightly profile on two full universes is 35 minutes of the two cores by
# itself, past the suite's budget (25 minutes on two cores); it is `make quality-test`.
test: $(STAMP) $(MANIFEST)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -q --durations=25 -m "not quality"

# The replication (issue 24): the default universe and its --signal 0 twin on each of five written-down seeds,
# trained with the nightly profile and scored on their test markets, per seed and pooled; writes
# bench/results/quality.{json,png} (about 75 minutes on two cores; a finished universe is kept and not rerun).
quality: $(STAMP) $(MANIFEST)
	$(BIN)/kfs bench quality

# The quality bar (issue 24): the policy's edge on the 25 test markets of the quality seed's universe and its
# null at --signal 0, side by side on two workers (about 20 minutes here), with both reports printed (-rP).
quality-test: $(STAMP) $(MANIFEST)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -rP -p no:logging -m quality tests/training/test_quality.py

test-fast: $(STAMP) $(MANIFEST)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -q --durations=10 -m "not slow and not quality"

dev: $(STAMP) $(MANIFEST)
	DAGSTER_HOME=$(CURDIR)/.kfs/dagster $(BIN)/python -m orchestration.instance
	DAGSTER_HOME=$(CURDIR)/.kfs/dagster $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: $(STAMP) $(MANIFEST)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/kfs bench

# Everything generated from the Python owners: data dictionary, dbt contract, README settings table.
docs: $(STAMP)
	$(BIN)/python -m features.store > docs/data_dictionary.md
	$(BIN)/python -m orchestration.dbt_contract
	$(BIN)/python -m core.settings --readme README.md
	$(BIN)/python -m features.calibration --write docs/calibration.md

stop: $(STAMP)
	$(BIN)/kfs pg stop

clean-lake:
	rm -rf lake
