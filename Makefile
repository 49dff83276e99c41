# quantrec: `make demo`, `make test`, `make lint`, `make ui`, `make bench`. Each target sets
# itself up on a fresh machine: a .venv with the CPU build of torch 2.13.0 first (an unpinned
# torch would pull a multi-GB CUDA build), then this project.
VENV ?= .venv
PY := $(VENV)/bin/python
QUANTREC_HOME ?= $(CURDIR)/.quantrec
export QUANTREC_HOME
# The UIs' ports (deploy/ui.sh); the daily runs link to the MLflow UI at this address.
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
QUANTREC_MLFLOW_UI_URL ?= http://127.0.0.1:$(MLFLOW_PORT)
export PREFECT_PORT MLFLOW_PORT QUANTREC_MLFLOW_UI_URL
# No telemetry from any process the project starts: Prefect's server and client, MLflow's
# client, server and UI.
PREFECT_SERVER_ANALYTICS_ENABLED ?= false
MLFLOW_DISABLE_TELEMETRY ?= true
DO_NOT_TRACK ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED MLFLOW_DISABLE_TELEMETRY DO_NOT_TRACK

.PHONY: setup demo test test-all lint ui bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	# MovieLens-100K ships inside this wheel; its files are read in place, recbole is never imported.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
	touch $@

demo: setup
	$(VENV)/bin/quantrec demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

# Lint and formatting check (rules in pyproject.toml's [tool.ruff]); nothing is rewritten.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

ui: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash deploy/ui.sh

# Everything quantrec writes lives in the home: the lake, MLflow's store and artifacts,
# Prefect's database and results, the locks and the reports.
clean:
	rm -rf $(QUANTREC_HOME)

bench: setup
	$(VENV)/bin/quantrec bench
	$(VENV)/bin/quantrec bench --train
