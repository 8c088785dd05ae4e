# Argus Pipelines. `make demo` sets everything up and runs the training DAG once; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-system ui bench lint venv init clean-state help

help:
	@echo "make demo   install, initialise .argus/ and run argus_weather_training end to end (local runtime)"
	@echo "make test   run the whole test suite (CI runs this)"
	@echo "make test-fast   the suite without the end-to-end and live-service tests (minutes, for the edit loop)"
	@echo "make test-system   only the browser, schedule, backfill and fault tests against live Airflow services"
	@echo "make ui     start Airflow and MLflow on localhost over .argus/"
	@echo "make bench  run every benchmark under benchmarks/ and print a table"
	@echo "make lint   ruff"
	@echo "make clean-state   delete .argus/ (all local runs, models and the dataset registry)"

venv: $(STAMP)

$(STAMP): requirements.txt tasks/pyproject.toml
	@start=$$(date +%s); \
	command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }; \
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV); \
	$(VENV)/bin/pip install -q --upgrade pip && \
	$(VENV)/bin/pip install -q -r requirements.txt && \
	$(VENV)/bin/pip install -q --no-deps -e tasks && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.install_seconds && touch $(STAMP) && \
	echo "argus: installed the pinned environment in $(VENV) ($$(cat $(VENV)/.install_seconds)s)"

init: $(STAMP)
	@scripts/init_local.sh

demo: $(STAMP)
	@ARGUS_INSTALL_S=$$(cat $(VENV)/.install_seconds 2>/dev/null || echo 0) scripts/run_demo.sh

test: $(STAMP)
	@. scripts/env.sh && $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	@. scripts/env.sh && $(VENV)/bin/python -m pytest --ignore=tests/system --ignore=tests/e2e $(PYTEST_ARGS)

# Browser, schedule, backfill and fault tests against live Airflow services (part of `make test`).
test-system: $(STAMP)
	@. scripts/env.sh && $(VENV)/bin/python -m pytest tests/system $(PYTEST_ARGS)

ui: $(STAMP)
	@scripts/ui.sh

bench: $(STAMP)
	@. scripts/env.sh && $(VENV)/bin/python benchmarks/run_all.py

lint: $(STAMP)
	@$(VENV)/bin/ruff check .

clean-state:
	rm -rf .argus
