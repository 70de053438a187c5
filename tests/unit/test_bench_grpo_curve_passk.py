"""bench.grpo_curve's pass@k table: one row per checkpoint, every k the evaluation reported, with intervals."""

from __future__ import annotations

from bench.grpo_curve import markdown


def test_pass_at_k_rows_follow_the_em_table():
    row = {"model": "start", "n": 100, "samples": 4, "temperature": 0.7}
    row |= {"pass@1": 0.5, "pass@1_ci": [0.4, 0.6], "pass@4": 0.75, "pass@4_ci": [0.65, 0.84]}
    document = {
        "evaluations": [{"step": 0, "em": 0.6, "em_ci": [0.5, 0.7], "gain_over_start": 0.0, "gain_ci": [0.0, 0.0]}],
        "pass_at_k": [row, {**row, "model": "end", "pass@4": 0.8}],
    }
    text = markdown(document)
    assert "| checkpoint | n | samples | temperature | pass@1 | pass@4 |" in text
    assert "| start | 100 | 4 | 0.7 | 0.500 [0.400, 0.600] | 0.750 [0.650, 0.840] |" in text
    assert "| end | 100 | 4 | 0.7 |" in text and "0.800 [0.650, 0.840]" in text
    assert "pass@" not in markdown({**document, "pass_at_k": []})
