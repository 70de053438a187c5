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


def _stop_when(command: list[str], ready, log_path, timeout_s: float = 400) -> dict[int, float]:
    """Start `command`, SIGTERM it once `ready()` holds; assert exit 130 and that nothing it spawned outlives it."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert _wait(ready, timeout_s), log_path.read_text()[-3000:]
        spawned = {p.pid: p.create_time() for p in psutil.Process(process.pid).children(recursive=True)}
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 130, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _wait(lambda: not any(_running(pid, t) for pid, t in spawned.items()), 60), "processes outlived the command"
    assert "stopped (SIGTERM or Ctrl-C)" in log_path.read_text()
    return spawned


TINY_GRPO = [
    "world.n_train=8",
    "world.n_eval=2",
    "eval.questions=2",
    "model.dtype=float32",
    "learner.precision=float32",
    "rollout.kv_cache_gib=1",
    "rollout.group_size=2",
    "rollout.max_turns=2",
    "rollout.max_tokens_per_turn=16",
    "rollout.max_model_len=1024",
    "grpo.questions_per_step=2",
    "grpo.save_every=1",
    "grpo.curriculum.enabled=false",
]


def _listening_pid(port: int) -> int | None:
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return connection.pid
    return None


def test_grpo_survives_a_killed_learner_and_a_sigterm_then_finishes_with_no_step_lost(tiny_model_dir, tmp_path):
    """One run, two faults: its learner killed (the command fails naming it, everything it started ends), resumed
    and stopped by SIGTERM (exit 130, nothing left running), resumed again to the end: every step on record."""
    import re

    out, log_path = tmp_path / "grpo", tmp_path / "g.log"
    command = [sys.executable, "-m", "mtr.cli", "grpo", "--model", str(tiny_model_dir), "--out", str(out)]
    command += [arg for s in TINY_GRPO for arg in ("--set", s)]
    with log_path.open("w") as log:
        process = subprocess.Popen([*command, "--set", "grpo.steps=400"], stdout=log, stderr=subprocess.STDOUT)
    try:
        # Killed at any moment: a checkpoint being written when it dies is incomplete and not resumed from.
        assert _wait((out / "checkpoints" / "step-000001" / "config.json").is_file, 400), log_path.read_text()[-3000:]
        port = int(re.search(r"learner\.host:start serving at [^\s]+:(\d+)", log_path.read_text()).group(1))
        learner = _listening_pid(port)
        assert learner is not None, f"nothing listens on the learner's port {port}"
        spawned = {p.pid: p.create_time() for p in psutil.Process(process.pid).children(recursive=True)}
        os.kill(learner, signal.SIGKILL)
        assert process.wait(180) == 1, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert "mtr grpo failed" in text and "LearnerService" in text and "continue with --resume" in text
    assert _wait(lambda: not any(_running(pid, t) for pid, t in spawned.items()), 60), "processes outlived mtr grpo"
    done_before = _grpo_steps(out)
    assert done_before[:1] == [0]

    # Resumed, then stopped by SIGTERM once it has saved a step beyond where it resumed.
    resumed = [*command, "--set", "grpo.steps=400", "--resume"]
    beyond = out / "checkpoints" / f"step-{max(done_before) + 2:06d}" / "config.json"
    _stop_when(resumed, beyond.is_file, tmp_path / "g2.log")

    finish = max(_grpo_steps(out)) + 2
    done = subprocess.run([*command, "--set", f"grpo.steps={finish}", "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _grpo_steps(out) == list(range(finish))  # lost: none; counted twice: none (redone steps went aside)
    traces = [json.loads(line) for line in (out / "traces" / "grpo.jsonl").read_text().splitlines()]
    keys = [(t["step"], t["task_id"], t["sample"]) for t in traces]
    assert len(keys) == len(set(keys)) and {t["step"] for t in traces} <= set(range(finish))
    assert (out / "checkpoints" / "final" / "config.json").is_file() and (out / "grpo_curve.json").is_file()


def _grpo_steps(out) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["event"] == "grpo"]


def test_eval_stopped_by_sigterm_keeps_the_finished_checkpoint_and_resume_reads_it_back(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "mtr.cli", "eval", "--model", f"a={tiny_model_dir}"]
    command += ["--model", f"b={tiny_model_dir}", "--data", "synthetic", "--limit", "3", "--out", str(out)]
    for setting in ["rollout.max_turns=2", "rollout.max_tokens_per_turn=16", "rollout.max_model_len=1024"]:
        command += ["--set", setting]
    finished = out / "traces" / "a-synthetic.jsonl"
    _stop_when(command, finished.is_file, tmp_path / "e.log")
    kept = finished.read_text()
    assert len(kept.splitlines()) == 3
    report = json.loads((out / "eval.json").read_text())  # written by the stopped run for what it finished
    assert [r["model"] for r in report["rows"]] == ["a"]
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "a: every dataset already evaluated" in done.stderr
    assert finished.read_text() == kept
    assert [r["model"] for r in json.loads((out / "eval.json").read_text())["rows"]] == ["a", "b"]


def test_run_stopped_by_sigterm_in_sft_writes_its_report_and_leaves_nothing_running(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    settings = [f"model.path={tiny_model_dir}", "model.dtype=float32", "learner.precision=float32", f"runs_dir={runs}"]
    settings += ["world.n_train=8", "world.n_eval=2", "eval.questions=2", "eval.base_questions=2", "synth.questions=4"]
    settings += ["sft.steps=400", "sft.batch_size=2", "learner.warmup_steps=0", "rollout.kv_cache_gib=1"]
    settings += ["rollout.max_turns=2", "rollout.max_tokens_per_turn=16", "rollout.max_model_len=1024"]
    command = [sys.executable, "-m", "mtr.cli", "run", *[arg for s in settings for arg in ("--set", s)]]

    def in_sft() -> bool:
        logs = list(runs.glob("*/metrics.jsonl"))
        return bool(logs) and any(json.loads(line)["event"] == "sft" for line in logs[0].read_text().splitlines())

    _stop_when(command, in_sft, tmp_path / "run.log")
    (run_dir,) = runs.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "error" and "KeyboardInterrupt" in r["error"] for r in records)
    report = (run_dir / "report.md").read_text()
    assert "| base | synthetic |" in report  # what finished before the stop is reported
    assert (run_dir / "traces" / "sft.jsonl").stat().st_size > 0 and (run_dir / "traces" / "eval-base.jsonl").is_file()
