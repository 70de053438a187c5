"""bench.sft_control's curve: which control checkpoint answers which GRPO evaluation, and the paired table."""

from __future__ import annotations

import json

from bench.sft_control import curve, markdown, match_by_time
from controller.commands.sft import complete_checkpoints
from controller.stages.sft import STATE_FILE


def test_complete_checkpoints_are_keyed_by_steps_done_and_skip_a_cut_one(tmp_path):
    for name, step in (("step-000050", 50), ("final", 120)):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / STATE_FILE).write_text(json.dumps({"step": step}))
    (tmp_path / "checkpoints" / "step-000100").mkdir()  # cut by a crash before its state file
    found = complete_checkpoints(tmp_path)
    assert sorted(found) == [50, 120]
    assert found[120].name == "final"


def test_each_grpo_evaluation_gets_the_control_checkpoint_nearest_in_training_time():
    grpo_seconds = {10: 1600.0, 20: 3100.0, 50: 6350.0}
    matched = match_by_time(grpo_seconds, per_step=21.9, control_steps=[50, 100, 150, 200, 250, 290])
    assert matched == {10: 50, 20: 150, 50: 290}  # 1600 s ≈ 73 steps: 50 is 23 away, 100 is 27


def test_the_curve_pairs_each_grpo_evaluation_with_its_control_on_the_same_questions():
    questions = [f"q{i}" for i in range(10)]
    grpo = {"step-10": {q: 1.0 for q in questions}}
    control = {q: float(i < 5) for i, q in enumerate(questions)}
    rows = curve(grpo, {10: 1600.0}, {50: control}, {10: 50}, per_step=20.0)
    assert rows[0]["control_seconds"] == 1000.0
    assert rows[0]["grpo_minus_control"]["gain"] == 0.5
    assert rows[0]["grpo_minus_control"]["n_paired"] == 10
    interval = {"em": 0.5, "em_ci": [0.2, 0.8], "n": 10}
    document = {
        "curve": rows,
        "comparison": {
            "start": interval,
            "grpo": {"stage": "step-10", **interval},
            "control": interval,
            **{key: rows[0]["grpo_minus_control"] for key in ("grpo_minus_control", "control_minus_start")},
            "grpo_minus_start": rows[0]["grpo_minus_control"],
        },
        "grpo_seconds": 1600.0,
        "control_steps": 50,
        "control_traces": 64,
        "control_seconds": 1000.0,
    }
    text = markdown(document)
    assert "| 10 | 1600 | 1.000 [" in text and "| 50 | 1000 | 0.500 [" in text
    assert "GRPO − control: +0.500" in text
