"""The process-level set-up of a learner rank: torch.distributed defaults, and memory handed back after a step."""

from __future__ import annotations

import os
import socket

import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> str:
    """Single-process defaults for torch.distributed, set before deepspeed is first imported.

    Existing values win, so a launcher (or a Ray actor placing several ranks) can set its own.
    Returns the device type the engine trains on.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(name, default)
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    return device


def return_freed_memory(device: str) -> None:
    """Hand memory freed by the step back to the OS (glibc keeps it otherwise).

    Every step allocates [tokens × vocab] logits of a different shape; on CPU, glibc's allocator keeps the
    freed blocks, and a learner on 2k-token traces grew to 10.8 GB resident until the node's memory
    monitor killed it. `malloc_trim` returns them; it is a no-op on CUDA memory and where glibc is absent.
    """
    if device != "cpu":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
