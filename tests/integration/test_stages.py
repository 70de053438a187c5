"""The stage commands chained on the tiny model: `mtr synth` → `mtr sft` (checkpoints, exact resume) → `mtr eval`.

The SFT checkpoint is evaluated by a vLLM rollout worker, which proves that what `mtr sft` writes is a
Hugging Face checkpoint vLLM loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mtr.cli import main

pytestmark = pytest.mark.integration

SMALL = ["--set", "learner.warmup_steps=1", "--set", "sft.batch_size=2", "--set", "learner.precision=float32"]
SMALL += ["--set", "model.dtype=float32"]


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "traces.jsonl"
    assert main(["synth", "--data", "synthetic", "--limit", "6", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 6
    return out


def _sft(model: Path, traces: Path, out: Path, *extra: str) -> int:
    argv = ["sft", "--traces", str(traces), "--out", str(out), "--set", f"model.path={model}", *SMALL, *extra]
    return main(argv)


def _losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "sft"}


def _weights(checkpoint: Path) -> dict:
    return load_file(str(checkpoint / "model.safetensors"))


def test_sft_writes_checkpoints_and_resumes_exactly(tiny_model_dir, traces, tmp_path):
    straight = tmp_path / "straight"
    assert _sft(tiny_model_dir, traces, straight, "--set", "sft.steps=4", "--set", "sft.save_every=2") == 0
    checkpoints = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert checkpoints == ["final", "step-000002"]
    assert (straight / "checkpoints" / "final" / "config.json").is_file()
    assert json.loads((straight / "checkpoints" / "final" / "trainer_state.json").read_text())["step"] == 4

    # A run that stopped after step 2: same output directory, only the step-2 checkpoint survived.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    assert (
        _sft(tiny_model_dir, traces, resumed, "--set", "sft.steps=4", "--set", "sft.save_every=2") == 2
    )  # no --resume
    assert _sft(tiny_model_dir, traces, resumed, "--set", "sft.steps=4", "--resume") == 0
    assert sorted(_losses(resumed)) == [2, 3]
    assert _losses(resumed) == pytest.approx({k: v for k, v in _losses(straight).items() if k >= 2}, abs=1e-6)
    a, b = _weights(straight / "checkpoints" / "final"), _weights(resumed / "checkpoints" / "final")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max().item() < 1e-6 for k in a)


def test_sft_checkpoint_is_evaluated_by_vllm(tiny_model_dir, traces, tmp_path):
    out = tmp_path / "sft"
    assert _sft(tiny_model_dir, traces, out, "--set", "sft.steps=2") == 0
    evaluation = tmp_path / "eval"
    argv = ["eval", "--model", f"sft={out / 'checkpoints' / 'final'}", "--data", "synthetic", "--limit", "2"]
    argv += ["--out", str(evaluation), "--set", "rollout.max_turns=2", "--set", "rollout.max_tokens_per_turn=16"]
    argv += ["--set", "model.dtype=float32", "--set", "learner.precision=float32"]
    assert main(argv) == 0
    result = json.loads((evaluation / "eval.json").read_text())
    assert [(r["model"], r["dataset"], r["n"]) for r in result["rows"]] == [("sft", "synthetic", 2)]
    traces = (evaluation / "traces" / "sft-synthetic.jsonl").read_text().splitlines()
    assert len(traces) == 2 and all(json.loads(line)["text"] for line in traces)
