"""`mtr eval` end to end: two checkpoints × two datasets through Ray, vLLM rollout workers and the simulator farm.

The second checkpoint is the tiny model re-saved with transformers' `save_pretrained`, which proves that a
checkpoint written in Hugging Face format loads in vLLM (and, greedy and bit-identical, answers the same).
"""

import json
from pathlib import Path

import pytest

from mtr.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HOTPOT = DATA / "hotpotqa" / "hotpot_dev_distractor_sample.json"


def _hotpot_sample() -> Path:
    if not HOTPOT.is_file():
        pytest.skip(f"benchmark sample {HOTPOT} is absent (expected in ../shared/data next to the repository)")
    return HOTPOT


def _resave(source: Path, target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_two_checkpoints_on_synthetic_and_hotpotqa(tiny_model_dir, tmp_path, capsys):
    hotpot = _hotpot_sample()
    resaved = _resave(tiny_model_dir, tmp_path / "resaved")
    out = tmp_path / "eval"
    # Documents are not in the prompt (the simulator searches them): the prompt is the question plus the
    # minimal tools' schemas (~250 tokens); two 16-token turns and one observation fit well within 2048.
    code = main(
        ["eval", "--model", f"tiny={tiny_model_dir}", "--model", str(resaved)]
        + ["--data", "synthetic", "--data", f"hotpotqa:{hotpot}", "--limit", "3", "--out", str(out)]
        + ["--set", "rollout.max_turns=2", "--set", "rollout.max_tokens_per_turn=16"]
        + ["--set", "rollout.max_model_len=2048", "--set", f"runs_dir={tmp_path / 'runs'}"]
    )
    assert code == 0
    assert f"output directory: {out}" in capsys.readouterr().out

    data = json.loads((out / "eval.json").read_text())
    assert data["models"] == ["tiny", "resaved"] and data["datasets"] == ["synthetic", "hotpotqa"]
    assert [(r["model"], r["dataset"], r["n"]) for r in data["rows"]] == [
        ("tiny", "synthetic", 3),
        ("tiny", "hotpotqa", 3),
        ("resaved", "synthetic", 3),
        ("resaved", "hotpotqa", 3),
    ]
    assert all(0.0 <= r["em"] <= r["f1"] + 1e-9 <= 1.0 + 1e-9 and r["seconds"] > 0 for r in data["rows"])
    hotpot_types = data["breakdowns"]["tiny"]["hotpotqa"]["by_type"]
    assert set(hotpot_types) <= {"bridge", "comparison"} and sum(b["n"] for b in hotpot_types.values()) == 3
    assert sum(b["n"] for b in data["breakdowns"]["resaved"]["synthetic"]["by_hops"].values()) == 3
    assert data["skipped_rows"] == {"synthetic": 0, "hotpotqa": 0}
    assert {"services start", "tiny: engine start", "resaved: engine start", "total"} <= set(data["wall_seconds"])

    markdown = (out / "eval.md").read_text()
    assert "| tiny | hotpotqa | 3 |" in markdown and "| resaved | synthetic | 3 |" in markdown
    assert "### hotpotqa" in markdown and "By hop count:" in markdown
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "config.yaml").is_file() and (out / "logs" / "simulator-0.log").is_file()

    for dataset in ("synthetic", "hotpotqa"):
        original = _lines(out / "traces" / f"tiny-{dataset}.jsonl")
        copy = _lines(out / "traces" / f"resaved-{dataset}.jsonl")
        assert len(original) == len(copy) == 3
        assert all(r["text"].startswith("<|im_start|>system") and r["gold"] for r in original)
        # Same weights, greedy decoding, same simulator: the re-saved checkpoint writes the same traces.
        assert [r["text"] for r in original] == [r["text"] for r in copy]


def test_a_bad_checkpoint_fails_before_anything_starts(tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    code = main(["eval", "--model", str(tmp_path / "not-a-model"), "--set", f"runs_dir={tmp_path / 'runs'}"])
    assert code == 2
    assert "has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
