"""Shared fixtures: the tiny test model (built once into the cache, reused by later runs) and a free port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A randomly initialized tiny Llama with SmolLM2's tokenizer; built on first use, then reused."""
    from mtr.modelprep import cache_dir, make_tiny_model

    return make_tiny_model(cache_dir() / "models" / "tiny-llama-test", seed=0)


@pytest.fixture
def free_port() -> int:
    """A TCP port free on loopback right now (servers that can bind port 0 should do that instead)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
