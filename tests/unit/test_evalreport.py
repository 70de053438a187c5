"""Evaluation report writers: eval.json keys, eval.md tables, eval.png only when several checkpoints were run."""

import json

import pytest

from controller.reports.evalreport import breakdown_tables, gains, stage_pairs, summary_table, write_eval_reports
from controller.scoring.intervals import Interval
from controller.stages.evaluation import PassAtK, QuestionScore, summarize


def _result(label, dataset, em_values, hops=2, question_type="bridge"):
    scores = [
        QuestionScore(question_type, hops + i % 2, em, em, 1.0, 2, task_id=f"{dataset}-{i}")
        for i, em in enumerate(em_values)
    ]
    return summarize(label, dataset, scores, policy_version=1, seconds=2.0)


RESULTS = [
    _result("base", "synthetic", [0.0, 0.0]),
    _result("base", "hotpotqa", [0.0, 1.0, 0.0], question_type="comparison"),
    _result("sft", "synthetic", [1.0, 0.0]),
    _result("sft", "hotpotqa", [1.0, 1.0, 0.0], question_type="comparison"),
]


def test_summary_table_has_one_row_per_checkpoint_and_dataset():
    lines = summary_table(RESULTS, "model")
    assert lines[0] == "| model | dataset | n | EM | F1 | valid traces | tool calls/trace |"
    assert lines[2:] == [
        "| base | synthetic | 2 | 0.000 [0.00, 0.00] | 0.000 | 1.00 | 2.00 |",
        "| base | hotpotqa | 3 | 0.333 [0.00, 1.00] | 0.333 | 1.00 | 2.00 |",
        "| sft | synthetic | 2 | 0.500 [0.00, 1.00] | 0.500 | 1.00 | 2.00 |",
        "| sft | hotpotqa | 3 | 0.667 [0.00, 1.00] | 0.667 | 1.00 | 2.00 |",
    ]
    assert "no evaluation finished" in summary_table([], "stage")[-1]


def test_breakdown_tables_per_dataset_by_type_and_hops():
    text = "\n".join(breakdown_tables(RESULTS, "model"))
    assert text.index("### synthetic") < text.index("### hotpotqa")
    assert "| sft | comparison | 3 | 0.667 [0.00, 1.00] | 0.667 | 1.00 |" in text
    assert "| base | 2 | 2 | 0.000 [0.00, 0.00] | 0.000 | 1.00 |" in text  # hotpotqa questions 1 and 3: 2 hops
    assert "| sft | 3 | 1 | 1.000 [1.00, 1.00] | 1.000 | 1.00 |" in text
    assert "| model | hops | n | EM | F1 | valid traces |" in text


def test_write_eval_reports_json_markdown_and_plot(tmp_path):
    files = write_eval_reports(tmp_path, RESULTS, {"synthetic": 0, "hotpotqa": 2}, {"base: engine start": 60.0})
    data = json.loads(files.json.read_text())
    assert set(data) == {
        "models",
        "datasets",
        "rows",
        "breakdowns",
        "gains",
        "pass_at_k",
        "skipped_rows",
        "wall_seconds",
    }
    assert data["models"] == ["base", "sft"] and data["datasets"] == ["synthetic", "hotpotqa"]
    assert data["rows"][3] == {
        "model": "sft",
        "dataset": "hotpotqa",
        "n": 3,
        "em": 2 / 3,
        "em_ci": [0.0, 1.0],
        "f1": 2 / 3,
        "valid": 1.0,
        "tool_calls": 2.0,
        "version": 1,
        "seconds": 2.0,
    }
    assert data["breakdowns"]["base"]["hotpotqa"]["by_type"]["comparison"]["n"] == 3
    assert data["breakdowns"]["sft"]["synthetic"]["by_hops"]["3"]["em"] == 0.0
    assert data["breakdowns"]["sft"]["synthetic"]["by_hops"]["3"]["em_ci"] == [0.0, 0.0]
    assert data["gains"][0] == {
        "dataset": "synthetic",
        "before": "base",
        "after": "sft",
        "gain": 0.5,
        "gain_ci": [0.0, 1.0],
        "n_paired": 2,
    }
    assert data["pass_at_k"] == []
    assert data["skipped_rows"] == {"synthetic": 0, "hotpotqa": 2} and data["wall_seconds"]["base: engine start"] == 60
    markdown = files.markdown.read_text()
    assert "| sft | hotpotqa | 3 | 0.667 [0.00, 1.00] | 0.667 | 1.00 | 2.00 |" in markdown
    assert "| hotpotqa | base | sft | 3 | +0.333 | [+0.000, +1.000] |" in markdown
    assert "Malformed dataset rows skipped: hotpotqa 2." in markdown
    assert "| base: engine start | 60.0 |" in markdown
    assert files.plot == tmp_path / "eval.png"
    assert files.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_checkpoint_writes_no_plot_and_removes_a_stale_one(tmp_path):
    (tmp_path / "eval.png").write_bytes(b"stale")
    files = write_eval_reports(tmp_path, RESULTS[:2], {}, {}, label="stage")
    assert files.plot is None and not (tmp_path / "eval.png").exists()
    assert json.loads(files.json.read_text())["stages"] == ["base"]
    assert "| stage | dataset |" in files.markdown.read_text()


def test_stage_pairs_are_consecutive_plus_first_to_last():
    assert stage_pairs(["base"]) == []
    assert stage_pairs(["base", "sft"]) == [("base", "sft")]
    assert stage_pairs(["base", "sft", "grpo"]) == [("base", "sft"), ("sft", "grpo"), ("base", "grpo")]


def test_gains_pair_questions_by_task_id_per_dataset():
    grpo = _result("grpo", "synthetic", [1.0, 1.0])
    found = gains([*RESULTS, grpo])
    synthetic = {(g.before, g.after): g for g in found if g.dataset == "synthetic"}
    assert set(synthetic) == {("base", "sft"), ("sft", "grpo"), ("base", "grpo")}
    # base→grpo: every question goes 0 → 1, so the paired interval is exactly [1, 1].
    assert (synthetic["base", "grpo"].gain, synthetic["base", "grpo"].low, synthetic["base", "grpo"].high) == (1, 1, 1)
    hotpot = [g for g in found if g.dataset == "hotpotqa"]
    assert [(g.before, g.after, g.n_paired) for g in hotpot] == [("base", "sft", 3)]  # grpo skipped hotpotqa
    assert hotpot[0].gain == pytest.approx(1 / 3)


def test_pass_at_k_goes_to_json_and_markdown(tmp_path):
    values = {1: Interval(0.25, 0.1, 0.4, 12), 4: Interval(0.5, 0.3, 0.7, 12)}
    passk = PassAtK("sft", "synthetic", 12, 4, values, temperature=1.0, seconds=3.0)
    files = write_eval_reports(tmp_path, RESULTS, {}, {}, label="stage", pass_at_k=[passk])
    row = json.loads(files.json.read_text())["pass_at_k"][0]
    assert row["stage"] == "sft" and row["samples"] == 4 and row["pass@4"] == 0.5 and row["pass@1_ci"] == [0.1, 0.4]
    markdown = files.markdown.read_text()
    assert "| stage | dataset | n | samples | temperature | pass@1 | pass@4 |" in markdown
    assert "| sft | synthetic | 12 | 4 | 1 | 0.250 [0.10, 0.40] | 0.500 [0.30, 0.70] |" in markdown
