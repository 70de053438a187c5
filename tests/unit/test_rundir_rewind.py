"""Resuming a checkpoint cuts the run's append-only records back to what they held when it was saved: the
records of the steps done again move to FILE.superseded (nothing lost), so no step is counted twice."""

from __future__ import annotations

import json

from controller.reports.rundir import RunDirectory


def _events(path):
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def test_rewind_moves_what_came_after_the_checkpoint_aside_and_keeps_appending(tmp_path):
    run = RunDirectory(tmp_path)
    run.log("grpo", 0)
    run.append_jsonl("traces/grpo.jsonl", [{"step": 0}])
    saved = run.appended_sizes()
    run.log("grpo", 1)
    run.append_jsonl("traces/grpo.jsonl", [{"step": 1}])
    run.append_jsonl("traces/eval.jsonl", [{"stage": "step-2"}])  # started after the checkpoint
    run.close()

    resumed = RunDirectory(tmp_path)
    moved = resumed.rewind(saved)
    assert set(moved) == {"metrics.jsonl", "traces/grpo.jsonl", "traces/eval.jsonl"}
    resumed.log("grpo", 1)  # the step done again
    resumed.close()
    assert _events(tmp_path / "metrics.jsonl") == ["grpo", "grpo"]
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert (tmp_path / "traces" / "grpo.jsonl").read_text() == '{"step": 0}\n'
    assert (tmp_path / "traces" / "eval.jsonl").read_text() == ""
    assert json.loads((tmp_path / "traces" / "grpo.jsonl.superseded").read_text()) == {"step": 1}
    assert _events(tmp_path / "metrics.jsonl.superseded") == ["grpo"]


def test_nothing_after_the_checkpoint_moves_nothing(tmp_path):
    run = RunDirectory(tmp_path)
    run.log("grpo", 0)
    assert run.rewind(run.appended_sizes()) == {}
    run.log("grpo", 1)
    run.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob("*.superseded"))
