"""A training command stopped by SIGTERM (what timeout, Kubernetes and Slurm send) exits 130 within seconds,
leaves none of its processes running (Ray's daemons and workers included), keeps its checkpoints, and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from mtr.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _running(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sft_stopped_by_sigterm_leaves_nothing_running_and_resumes(tiny_model_dir, tmp_path):
    traces = tmp_path / "traces.jsonl"
    assert main(["synth", "--data", "synthetic", "--limit", "4", "--out", str(traces)]) == 0
    out = tmp_path / "sft"
    settings = [f"model.path={tiny_model_dir}", "learner.precision=float32", "model.dtype=float32"]
    settings += ["sft.batch_size=2", "sft.save_every=2", "learner.warmup_steps=0"]
    command = [sys.executable, "-m", "mtr.cli", "sft", "--traces", str(traces), "--out", str(out)]
    command += [arg for s in settings for arg in ("--set", s)]
    with (tmp_path / "sft.log").open("w") as log:
        process = subprocess.Popen([*command, "--set", "sft.steps=400"], stdout=log, stderr=subprocess.STDOUT)
    try:
        first = out / "checkpoints" / "step-000002" / "trainer_state.json"
        assert _wait(first.exists, 300), (tmp_path / "sft.log").read_text()[-2000:]
        spawned = {p.pid: p.create_time() for p in psutil.Process(process.pid).children(recursive=True)}
        assert spawned  # Ray's daemons and the learner's worker
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _wait(lambda: not any(_running(pid, t) for pid, t in spawned.items()), 60), "processes outlived mtr sft"
    state = json.loads(first.read_text())
    assert state["step"] == 2
    done = subprocess.run([*command, "--set", "sft.steps=4", "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "checkpoints" / "final" / "config.json").is_file()
    assert "stopped (SIGTERM or Ctrl-C)" in (tmp_path / "sft.log").read_text()
    assert os.path.getsize(out / "metrics.jsonl") > 0
