# One entry point: `make demo` runs the main job, `make test` runs the suite.
# Both create .venv when missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# the `gp` sampler's extra (torch): its CPU build when a local wheel provides one; without
	# it the gp tests skip (PyPI's default torch wheel pulls several GB of CUDA libraries)
	-$(BIN)/python -m pip install --quiet "torch==2.13.0+cpu" "greenlet>=3"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hpsearch demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
