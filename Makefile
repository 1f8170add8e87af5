# Conveyor: two commands set everything up.
#   make demo   the end-to-end quickstart on embedded defaults (SQLite, local files)
#   make test   the test suite against the real services (PostgreSQL, Redis, NATS)
# Both create .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=
DEMO_DIR ?= .demo

.PHONY: demo test lint bench services clean venv bytecode

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Conveyor needs Python 3.11+; set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# One stamp per set of extras; re-installs when pyproject.toml or the extras here change.
$(VENV)/.stamp-demo: pyproject.toml Makefile | $(VENV)/bin/python
	$(PIP) install -e '.[onnx,serve,rag,gateway,local-llm,mcp,deploy,nats,quickstart]'
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml Makefile | $(VENV)/bin/python
	$(PIP) install -e '.[dev]'
	@touch $@ $(VENV)/.stamp-demo

venv: $(VENV)/.stamp-dev

# The editable install's source compiled, as pip leaves a wheel: with
# PYTHONDONTWRITEBYTECODE=1 no import writes it, and every command (every server
# start, every CLI call a test makes) would compile what it imports. Only what is
# stale is recompiled (a fraction of a second when nothing changed).
bytecode: | $(VENV)/bin/python
	@$(PY) -m compileall -q -j 0 src > /dev/null

demo: $(VENV)/.stamp-demo bytecode
	$(PY) examples/quickstart/quickstart.py --project $(DEMO_DIR) --fresh
	@echo; echo '$$ conveyor doctor'; $(VENV)/bin/conveyor doctor -C $(DEMO_DIR)
	@echo; echo '$$ conveyor events tail -n 8'; $(VENV)/bin/conveyor events tail -n 8 -C $(DEMO_DIR)

services:
	@scripts/services.sh postgres redis nats mariadb prometheus chromium haproxy nginx bubblewrap buildah workflow-parser

test: $(VENV)/.stamp-dev bytecode services
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Peers are installed in their own virtualenvs under .bench-venvs/, never into Conveyor's.
bench: $(VENV)/.stamp-dev bytecode services
	@scripts/services.sh wrk
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .bench-venvs $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
