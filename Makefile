# Quick start:  make demo   (set up and run the MEAL V2 demo)   |   make test   (set up and run the tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TOKENIZERS_PARALLELISM ?= false

BENCHMARK_ALL := --methods kd meal_v2 feed feed_sequential pskd bake extracurricular extracurricular_regression compress --seeds 0 1 2

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: these wheels are on our machines; a looser pin downloads a multi-GB build
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[test,plot]"
	touch $@

setup: $(VENV)/.installed

# The MEAL V2 demo (every training digit: the student is near the ceiling), then MEAL V2 against its baseline in the
# benchmark's regime (5 labelled digits per class, 5 folds, seed 0: docs/benchmark.md), and the full table's command.
demo: setup
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no recipes/meal_v2.py
	$(VENV)/bin/hfkd benchmark --methods meal_v2 --seeds 0 --output_dir outputs/benchmark_demo
	@echo "The full table (every method, 3 seeds x 5 folds; README 'Results'): $(VENV)/bin/hfkd benchmark $(BENCHMARK_ALL)"

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) outputs
