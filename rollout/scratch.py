"""Scratch directories for weight files in RAM-backed /dev/shm that do not outlive their owner.

A weight file is as large as the model, and /dev/shm is memory: a rollout worker killed with SIGKILL (or by the
OOM killer) never runs its clean-up, and each leftover directory keeps its files in RAM until reboot (4.7 GB
had piled up here, enough for Ray's memory monitor to kill a GRPO run). So each directory carries its owner's
pid in its name, and every new one first removes those whose owner is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path


def shared_memory_dir() -> str | None:
    """RAM-backed /dev/shm when it exists (Linux), else the default temporary directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(prefix: str, base: str | os.PathLike) -> list[Path]:
    """Remove `<base>/<prefix><pid>-*` directories whose process is gone; returns what was removed."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    removed = []
    for path in Path(base).glob(f"{prefix}*"):
        match = pattern.match(path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def owned_scratch_dir(prefix: str, owner: object, base: str | None = None) -> Path:
    """A new directory `<prefix><pid>-XXXX` under `base` (default: /dev/shm), removed when `owner` is collected
    or the process exits cleanly, and by the next one made after a crash. Stale ones are swept first."""
    base = base or shared_memory_dir() or tempfile.gettempdir()
    sweep_stale(prefix, base)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    weakref.finalize(owner, shutil.rmtree, path, ignore_errors=True)
    return path
