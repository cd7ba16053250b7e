# The two commands of the README: `make demo` and `make test`. Both create .venv if missing.
# `make cluster`: the demo on replicas behind HAProxy, on the local PostgreSQL.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make demo PORT=9090` (or `make cluster PORT=9090`) when 8080 is taken.
PORT ?= 8080

.PHONY: demo cluster test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	-$(BIN)/pip install --quiet -e '.[speed]'  # uvloop, when the platform has it
	touch $@

$(VENV)/.installed-postgres: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/vitals demo --port $(PORT)

cluster: $(VENV)/.installed $(VENV)/.installed-postgres
	$(BIN)/vitals cluster --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: $(VENV)/.installed-test $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
