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

.PHONY: setup postgres demo test test-all lint ui bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,scale]"
	# MovieLens-100K ships inside this wheel; its files are read in place, recbole is never imported.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
	touch $@

# PostgreSQL 15's server programs for `quantrec stack up --postgres` and its tests, from
# Debian's packages when missing (no default cluster is created or started: the stack makes
# its own under the home). Without root or apt the PostgreSQL tests skip, saying why.
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgres:
ifeq ($(PG_BIN),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  mkdir -p /etc/postgresql-common; \
	  test -e /etc/postgresql-common/createcluster.conf || \
	    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    -o Dpkg::Options::=--force-confold postgresql >/dev/null; } || \
	    echo "PostgreSQL could not be installed (apt-get failed): its tests skip"; \
	else echo "PostgreSQL is not installed (needs root and apt-get): its tests skip"; fi
endif

demo: setup
	$(VENV)/bin/quantrec demo

test: setup postgres
	$(PY) -m pytest -q

test-all: setup postgres
	$(PY) -m pytest -q -m ""

# Lint and formatting check (rules in pyproject.toml's [tool.ruff]); nothing is rewritten.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# make ui POSTGRES=1: both stores on a PostgreSQL cluster under the home (deploy/ui.sh).
ui: setup $(if $(POSTGRES),postgres)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" QUANTREC_POSTGRES="$(POSTGRES)" bash deploy/ui.sh

# Everything quantrec writes lives in the home: the lake, MLflow's store and artifacts,
# Prefect's database and results, the locks and the reports.
# A stack (quantrec stack up) is stopped first: its database cluster lives in the home too.
clean:
	if [ -d "$(QUANTREC_HOME)/stack" ] && [ -x $(VENV)/bin/quantrec ]; then \
	  $(VENV)/bin/quantrec stack down --remove; fi
	rm -rf $(QUANTREC_HOME)

bench: setup
	$(VENV)/bin/quantrec bench
	$(VENV)/bin/quantrec bench --train
