"""bench.grpo_curve's tables: pass@k with greedy EM beside it, one row per checkpoint, every k the evaluation
reported, with intervals; and where the gain came from (answers turned right/wrong, EM by hops and type)."""

from __future__ import annotations

import json

from bench.grpo_curve import evaluated, markdown, pass_at_k


def test_pass_at_k_rows_follow_the_em_table():
    row = {"model": "start", "n": 100, "samples": 4, "temperature": 0.7}
    row |= {"pass@1": 0.5, "pass@1_ci": [0.4, 0.6], "pass@4": 0.75, "pass@4_ci": [0.65, 0.84]}
    document = {
        "evaluations": [{"step": 0, "em": 0.6, "em_ci": [0.5, 0.7], "gain_over_start": 0.0, "gain_ci": [0.0, 0.0]}],
        "pass_at_k": [{**row, "greedy_em": 0.7, "greedy_em_ci": [0.61, 0.79]}, {**row, "model": "end", "pass@4": 0.8}],
    }
    text = markdown(document)
    assert "| checkpoint | n | samples | temperature | greedy EM | pass@1 | pass@4 |" in text
    assert "| start | 100 | 4 | 0.7 | 0.700 [0.610, 0.790] | 0.500 [0.400, 0.600] | 0.750 [0.650, 0.840] |" in text
    assert "| end | 100 | 4 | 0.7 | - |" in text and "0.800 [0.650, 0.840]" in text
    assert "pass@" not in markdown({**document, "pass_at_k": []})


def test_greedy_em_of_the_same_checkpoint_sits_beside_its_pass_at_k(tmp_path):
    pass_row = {"model": "end", "dataset": "synthetic", "n": 2, "samples": 4, "temperature": 0.7, "pass@1": 0.5}
    greedy = {"model": "end", "dataset": "synthetic", "n": 2, "em": 1.0, "em_ci": [1.0, 1.0]}
    (tmp_path / "eval.json").write_text(json.dumps({"rows": [greedy], "pass_at_k": [pass_row]}))
    (row,) = pass_at_k(tmp_path)
    assert row["greedy_em"] == 1.0 and row["pass@1"] == 0.5


def test_the_breakdown_counts_answers_that_turned_and_em_by_hops_and_type(tmp_path):
    def record(stage: str, task: str, right: bool, hops: int, kind: str) -> str:
        row = {"stage": stage, "task_id": task, "exact_match": float(right), "hops": hops, "question_type": kind}
        return json.dumps({**row, "tool_calls": 2 + hops * right})

    lines = [
        record("step-0", "a", False, 4, "compositional"),
        record("step-0", "b", True, 2, "bridge"),
        record("step-0", "c", True, 2, "bridge"),
        record("step-10", "a", True, 4, "compositional"),
        record("step-10", "b", False, 2, "bridge"),
        record("step-10", "c", True, 2, "bridge"),
    ]
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "eval.jsonl").write_text("\n".join(lines) + "\n")
    start, last = evaluated(tmp_path)
    assert (last["turned_right"], last["turned_wrong"]) == (1, 1)
    assert last["by_hops"]["4"] == {"em": 1.0, "n": 1} and start["by_hops"]["4"]["em"] == 0.0
    assert last["by_type"]["bridge"] == {"em": 0.5, "n": 2}
    text = markdown({"evaluations": [start, last], "pass_at_k": []})
    assert "1 answers turned right, 1 wrong" in text
    assert "| hops 4 | 1 | 0.00 | 1.00 |" in text and "| type bridge | 2 | 1.00 | 0.50 |" in text
