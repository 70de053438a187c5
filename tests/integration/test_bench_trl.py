"""`python -m bench.trl_bench` end to end on the tiny model: both sides run a step and write trl.json / trl.md.

TRL is a benchmark-only extra (not installed in CI), so the test skips without it.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_trl_bench_measures_both_sides(tiny_model_dir, tmp_path):
    pytest.importorskip("trl", reason="TRL is the benchmark extra (pip install -e '.[bench]'); CI does not install it")
    pytest.importorskip("datasets", reason="the TRL side needs `datasets` (benchmark extra)")
    from bench.trl_bench import main

    argv = ["--quick", "--model", str(tiny_model_dir), "--dtype", "float32", "--group-size", "2"]
    argv += ["--max-tokens-per-turn", "8", "--warmup-steps", "0", "--out-dir", str(tmp_path)]
    assert main(argv) == 0

    result = json.loads((tmp_path / "trl.json").read_text())
    [run] = result["runs"]
    assert run["model"] == tiny_model_dir.name
    sides = {side["side"]: side for side in run["sides"]}
    assert sorted(sides) == ["mtr", "trl"]
    for side in sides.values():
        assert side["steps"] == 1 and side["traces"] == 2  # one question x 2 samples
        assert side["seconds_per_step"] > 0 and side["traces_per_s"] > 0
        assert 1 <= side["assistant_turns_per_trace"] <= 2  # quick: a turn budget of 2
        assert 0 < side["policy_tokens_per_trace"] <= 2 * 8
    assert run["mtr_vs_trl"] == pytest.approx(sides["mtr"]["traces_per_s"] / sides["trl"]["traces_per_s"], rel=0.02)
    assert result["settings"]["group_size"] == 2 and result["settings"]["questions_per_step"] == 1
    table = (tmp_path / "trl.md").read_text()
    assert "| MTR |" in table and "| TRL |" in table and f"| {tiny_model_dir.name} |" in table
