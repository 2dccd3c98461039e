# The two commands of the README: `make demo` and `make test`. Both create .venv and install
# what they need; torch==2.13.0 goes in first so pip takes the CPU build on this disk.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sparseformer bench

lint: $(STAMP)
	$(BIN)/ruff check sparseformer tests benchmarks
	$(BIN)/ruff format --check sparseformer tests benchmarks

test: $(STAMP) lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
