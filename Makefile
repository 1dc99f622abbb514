# sona: the two commands a newcomer needs are `make quickstart` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export BENTOML_DO_NOT_TRACK := True
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test quickstart lint services-up clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install sona with dev extras (idempotent)

lint: install  ## ruff + import-linter architecture contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: install  ## start Postgres/Redis/Kafka on loopback, run lint + pytest, stop them
	scripts/run-tests.sh

quickstart: install  ## the main job: train on ml-100k (or synthetic), serve everything
	$(PY) -m serving.quickstart

clean:
	rm -rf .sona-data .pytest_cache
