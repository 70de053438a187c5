"""`mtr synth` stopped by a signal leaves no process behind: SIGTERM (what timeout, Kubernetes and Slurm send)
unwinds it with its report written; SIGKILL cannot be handled, and its simulator replica stops on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); its /proc status says so
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _start_synth(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """`mtr synth` on many questions; returns it and its replica's pid once the replica is serving."""
    out = tmp_path / "traces.jsonl"
    command = [sys.executable, "-m", "mtr.cli", "synth", "--out", str(out), "--set", "world.n_train=3000"]
    # Output to a file, not a pipe: an unread pipe fills with progress bars and blocks the command.
    with (tmp_path / "synth.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    ready = tmp_path / "logs" / "simulator-0.ready.json"
    assert _wait(lambda: ready.exists() and (tmp_path / "traces.ledger.jsonl").exists(), 120), "synth did not start"
    return process, int(json.loads(ready.read_text())["pid"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_synth_leaves_no_replica_and_keeps_what_it_decided(tmp_path, signum):
    process, replica = _start_synth(tmp_path)
    try:
        assert _alive(replica)
        process.send_signal(signum)
        process.wait(60)
    finally:  # a failed check must not leave the command (and its replica) running
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
    assert _wait(lambda: not _alive(replica), 15), f"replica {replica} outlived mtr synth ({signum.name})"
    decided = (tmp_path / "traces.ledger.jsonl").read_text().splitlines()
    assert decided  # what was decided before the signal is kept
    if signum == signal.SIGTERM:
        report = json.loads((tmp_path / "traces.report.json").read_text())
        assert sum(d["attempted"] for d in report["datasets"].values()) == len(decided)
