# The two commands of the README: `make demo` and `make test`. Both create .venv and install
# what they need; torch==2.13.0 goes in first so pip takes the CPU build on this disk.
# `make demo` installs only what `sparseformer bench` uses (the `bench` extra); `make test`
# installs the `dev` extra, everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(VENV)/.torch:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	touch $@

# The native kernel's one-time build (13 s) runs while pip installs the rest; if it fails, the
# bench retries it at first use and says why it is unavailable.
$(VENV)/.bench: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet numpy ninja
	PYTHONPATH=. $(BIN)/python -m sparseformer.kernels.cpu & \
	$(BIN)/pip install --quiet -e ".[bench]"; status=$$?; wait; exit $$status
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.bench
	$(BIN)/sparseformer bench

lint: $(VENV)/.dev
	$(BIN)/ruff check sparseformer tests benchmarks
	$(BIN)/ruff format --check sparseformer tests benchmarks

# one pytest-xdist worker per core (tests/conftest.py gives each its share of torch threads)
test: $(VENV)/.dev lint
	$(BIN)/pytest -q -n auto

clean:
	rm -rf $(VENV) build *.egg-info
