# The two commands: `make demo` and `make test`. Both create .venv from the lock file
# when it is missing or older than the lock, so a fresh clone needs only Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed

# Without .pyc files every process recompiles Airflow and GX (twice as slow to import).
export PYTHONDONTWRITEBYTECODE :=
export GX_ANALYTICS_ENABLED := false

.PHONY: demo test lint bench lock install up down clean

install: $(STAMP)

$(STAMP): requirements/lock.txt requirements/bootstrap.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/bootstrap.txt
	$(UV) pip sync --quiet --python $(BIN)/python requirements/lock.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --editable .
	touch $@

demo: $(STAMP)
	$(BIN)/kms demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/generate.py

up: $(STAMP)
	$(BIN)/kms up

down: $(STAMP)
	$(BIN)/kms down

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		--no-header --output-file requirements/lock.txt

clean:
	-$(BIN)/kms down
	-$(BIN)/kms db stop
	rm -rf $(VENV) .kms
