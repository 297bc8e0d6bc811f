# Set-up and everyday commands. Each target creates .venv on first use, so a fresh clone needs only
# `make train` or `make test`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: train test lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

train: $(VENV)/.installed
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no \
		scripts/train.py $(TRAIN_ARGS)

# Always refresh the dev extras, so that a changed pyproject.toml or a half-built venv is repaired.
test: | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: | $(BIN)/python
	$(BIN)/ruff check hf_mnist scripts tests
	$(BIN)/ruff format --check hf_mnist scripts tests

clean-venv:
	rm -rf $(VENV)
