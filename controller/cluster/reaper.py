"""A watchdog that ends every process a command started once the command itself is gone, however it ended.

A command that starts Ray locally has its daemons and workers (raylet, GCS, engine processes) as
descendants; a SIGKILL, an OOM kill or a crash skips every `finally` and `atexit`, and those processes live
on under PID 1, holding ports and memory. The reaper is a small separate process: every `interval_s` it
records the command's descendants (pid and start time), and when the command's pid is gone it terminates
the recorded ones that still run (the start time guards against a reused pid), then kills what is left.

    python -m controller.cluster.reaper PID      (started for you by `start_reaper`)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

GRACE_S = 5.0


def start_reaper(interval_s: float = 1.0) -> subprocess.Popen:
    """Watch this process from a new session of its own (so a signal to our process group spares it)."""
    command = [sys.executable, "-m", "controller.cluster.reaper", str(os.getpid()), str(interval_s)]
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def descendants(pid: int) -> dict[int, float]:
    """pid -> start time of every process below `pid` (empty when it is gone)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for child in children:
        try:
            found[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            continue
    return found


def reap(recorded: dict[int, float], grace_s: float = GRACE_S) -> list[int]:
    """Terminate the recorded processes still running as themselves, kill those that outlast `grace_s`."""
    alive = []
    for pid, started in recorded.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started and process.pid != os.getpid():
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    for process in alive:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in alive]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch(parent: int, interval_s: float) -> list[int]:
    """Record `parent`'s descendants until it is gone, then reap them; returns the pids it had to end."""
    recorded: dict[int, float] = {}
    while running(parent):
        recorded.update(descendants(parent))
        time.sleep(interval_s)
    return reap(recorded)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    watch(int(args[0]), float(args[1]) if len(args) > 1 else 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
