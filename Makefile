# quantrec: `make demo`, `make test`, `make lint`, `make ui`, `make bench`. Each target sets
# itself up on a fresh machine: a .venv with the CPU build of torch 2.13.0 first (an unpinned
# torch would pull a multi-GB CUDA build), then this project.
VENV ?= .venv
PY := $(VENV)/bin/python
QUANTREC_HOME ?= $(CURDIR)/.quantrec
export QUANTREC_HOME

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

clean:
	rm -rf $(QUANTREC_HOME)

bench: setup
	$(VENV)/bin/quantrec bench
	$(VENV)/bin/quantrec bench --train
