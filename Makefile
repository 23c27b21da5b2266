# ijr: `make train` then `make test` on a fresh machine. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pins that install from this machine's disk; the project's own ranges are in pyproject.toml.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
SWEEP ?=
TINY ?=
LAUNCHER ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train sweep status report lint format test test-slow test-system test-all bench bench-sharpness bench-ejr bench-report bench-packed bench-loggers clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/ijr-train: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev,loggers]'  # loggers: the live loggers' packages, for their tests
	@touch $@

install: $(BIN)/ijr-train  ## create $(VENV) (if needed) and install ijr editable with its test tools and the live loggers

train: install  ## run the default experiment (fc-tanh, full-batch GD, MSE, digits); extra overrides in ARGS="..."
	$(BIN)/ijr-train $(ARGS)

sweep: install  ## run a named sweep: make sweep SWEEP=lr_bs [LAUNCHER=slurm|local_parallel] [TINY=1] [PACK=K|auto] [ARGS="overrides --dry-run"]
	@test -n "$(SWEEP)" || { echo "make sweep: set SWEEP=<name>; the sweeps are:" >&2; $(BIN)/ijr-sweep --list >&2; exit 2; }
	$(BIN)/ijr-sweep $(SWEEP) $(if $(TINY),--tiny) $(if $(PACK),--pack $(PACK)) $(if $(LAUNCHER),launcher=$(LAUNCHER)) $(ARGS)

status: install  ## counts of a sweep's jobs (COMPLETED/RUNNING/FAILED/DIVERGED/MISSING): make status SWEEP=lr_bs
	@test -n "$(SWEEP)" || { echo "make status: set SWEEP=<name> (or run ijr-status SWEEP_DIR)" >&2; exit 2; }
	$(BIN)/ijr-status outputs/sweeps/$(SWEEP)$(if $(TINY),-tiny) $(ARGS)

report: install  ## tables, figures and index.html of a sweep: make report SWEEP=lr_bs (or ARGS="DIR... --out DIR")
	@test -n "$(SWEEP)$(ARGS)" || { echo "make report: set SWEEP=<name> (or ARGS=\"PATH... --out DIR\")" >&2; exit 2; }
	$(BIN)/ijr-report $(if $(SWEEP),outputs/sweeps/$(SWEEP)$(if $(TINY),-tiny)) $(ARGS)

lint: install  ## ruff (lint and format check) and import-linter's layer contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: install  ## ruff format, then ruff's safe fixes (import order, unused imports)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

PYTEST_MARKS ?= not slow and not system

test: install  ## the test suite without the tests marked slow or system, ~10 min (exit code 5, "no tests ran", fails)
	@$(BIN)/python -m pytest -m "$(PYTEST_MARKS)" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: install  ## only the tests marked slow (resume after SIGKILL, every job of every study, ...)
	@$(MAKE) --no-print-directory test PYTEST_MARKS="slow and not system"

test-system: install  ## only the tests that may apt-get install Debian packages (a real SLURM, the page in Chromium)
	@$(MAKE) --no-print-directory test PYTEST_MARKS="system"

test-all: install  ## every test
	@$(MAKE) --no-print-directory test PYTEST_MARKS="slow or not slow"

bench: install  ## training throughput: ijr-train's loop vs a hand-written loop (see BENCHMARKS.md)
	$(BIN)/python bench/train_throughput.py $(ARGS)

bench-sharpness: install  ## one sharpness estimate: ijr vs PyHessian 0.1 vs curvlinops 3.0.1 (installs the peers)
	$(BIN)/python -m pip install -q pyhessian==0.1 curvlinops-for-pytorch==3.0.1
	$(BIN)/python bench/sharpness.py $(ARGS)

bench-ejr: install  ## cost of a step with ejr / ejr_sam / ejr_v2 / SAM / the exact Frobenius penalty vs the plain step
	$(BIN)/python bench/ejr_cost.py $(ARGS)

bench-packed: install  ## K runs packed (vmapped) vs K sequential runs, metrics=eos (ARGS="--settings fcn3_cifar --ks 1 32 --device cuda")
	$(BIN)/python bench/packed.py $(ARGS)

bench-loggers: install  ## cost of logger=tensorboard / mlflow / wandb against logger=none on a tiny run (bench/loggers.py)
	$(BIN)/python bench/loggers.py $(ARGS)

bench-report: install  ## ijr-report on 1,000 synthetic runs x 2,000 steps x 20 metrics (generates 1.5 GB in /tmp once)
	$(BIN)/python bench/report_speed.py $(ARGS)

clean:  ## remove caches and build files (keeps $(VENV) and outputs/)
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
