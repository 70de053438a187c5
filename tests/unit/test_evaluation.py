"""Evaluation aggregates: EM/F1 over gold aliases, validity, tool calls, per question type and per hop count."""

import json

import pytest

from controller.evaluation import QuestionScore, evaluate, summarize
from mtr.config import load_config
from mtr.grammar import AssistantTurn, ToolCall, ToolTurn, Trace, render
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the corpus.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
OBS = {"results": [{"title": "Ana Vell", "text": "Ana Vell was born in Velgrad, the Republic of Oskar."}]}


def _score(question_type, hops, em, f1, valid=1.0, calls=1):
    return QuestionScore(question_type, hops, em, f1, valid, calls)


def test_summarize_overall_and_per_type_and_hops():
    scores = [
        _score("bridge", 2, 1.0, 1.0, calls=2),
        _score("bridge", 3, 0.0, 0.5, calls=1),
        _score("comparison", 2, 0.0, 0.0, valid=0.0, calls=0),
        _score("", 2, 1.0, 1.0, calls=1),
    ]
    result = summarize("sft", "hotpotqa", scores, policy_version=7, seconds=1.5)
    assert (result.count, result.exact_match, result.f1) == (4, 0.5, 0.625)
    assert result.valid_rate == 0.75 and result.mean_tool_calls == 1.0
    assert (result.policy_version, result.seconds) == (7, 1.5)
    assert list(result.types) == ["bridge", "comparison", "unknown"]
    assert result.types["bridge"].n == 2 and result.types["bridge"].f1 == 0.75
    assert result.types["comparison"].valid == 0.0
    assert list(result.hops) == [2, 3]
    assert (result.hops[2].n, result.hops[2].em) == (3, pytest.approx(2 / 3))
    assert result.by_hops["3"] == {"n": 1, "em": 0.0, "f1": 0.5, "valid": 1.0, "tool_calls": 1.0}
    assert json.loads(json.dumps(result.by_type))["unknown"]["em"] == 1.0


def test_summarize_of_nothing_is_zero_not_an_error():
    result = summarize("base", "synthetic", [])
    assert (result.count, result.exact_match, result.types, result.hops) == (0, 0.0, {}, {})


class FakeRollout:
    """Answers GenerateGroups with fixed trace texts; records the sampling it was asked for."""

    address = "fake:0"

    def __init__(self, traces: dict[str, rpb.Trace]) -> None:
        self.traces = traces
        self.sampling = None

    def generate_groups(self, tasks, group_size, sampling):
        self.sampling = sampling
        groups = [rpb.Group(task_id=t.id, traces=[self.traces[t.id]]) for t in tasks]
        return rpb.GenerateGroupsResponse(groups=groups, policy_version=3)


def _answered(task: Task, answer: str) -> rpb.Trace:
    call, arguments = ToolCall("search", {"query": "Ana Vell"}), '{"query": "Ana Vell"}'
    turns = (AssistantTurn("look", call), ToolTurn(OBS), AssistantTurn("ok", answer=answer))
    record = rpb.ToolCallRecord(name="search", arguments_json=arguments, observation_json=json.dumps(OBS), status="ok")
    text = render(Trace(task.question, task.tools, turns))
    return rpb.Trace(task_id=task.id, text=text, tool_calls=[record], finish_reason="answer")


def test_evaluate_scores_greedy_traces_against_every_alias():
    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    golds = ("Velgrad City", "Velgrad")
    alias = Task("a", "Where was Ana Vell born?", golds, hops=2, question_type="bridge", tools=(SEARCH,))
    partial = Task("b", "Which country holds Velgrad?", ("Oskar",), hops=3, question_type="bridge", tools=(SEARCH,))
    broken = Task("c", "Who?", ("Nobody",), hops=2, question_type="comparison", tools=(SEARCH,))
    rollout = FakeRollout(
        {
            "a": _answered(alias, "the Velgrad"),
            "b": _answered(partial, "Republic of Oskar"),
            "c": rpb.Trace(task_id="c", text="<|im_start|>assistant <answer>", finish_reason="length"),
        }
    )
    result, records = evaluate("sft", "world", [alias, partial, broken], rollout, config)
    assert rollout.sampling.temperature == 0.0 and rollout.sampling.max_turns == 3
    assert (result.count, result.exact_match, result.policy_version) == (3, pytest.approx(1 / 3), 3)
    assert result.f1 == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # "republic of oskar" vs "oskar": P 1/3, R 1
    assert result.valid_rate == pytest.approx(2 / 3)
    assert result.mean_tool_calls == pytest.approx(2 / 3)
    assert result.types["comparison"].valid == 0.0 and result.hops[3].f1 == pytest.approx(0.5)
    assert [r["task_id"] for r in records] == ["a", "b", "c"]
    assert records[0]["answer"] == "the Velgrad" and records[0]["exact_match"] == 1.0
    assert records[2]["format_error"] and records[2]["question_type"] == "comparison"
    assert all(r["dataset"] == "world" and r["stage"] == "sft" for r in records)


def _checkpoint_files(directory, weights=True):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "tokenizer.json").write_text("{}")
    if weights:
        (directory / "model.safetensors").write_bytes(b"")
    return directory


def test_model_values_are_checked_before_anything_starts(tmp_path):
    from controller.evalcmd import CheckpointError, parse_models

    final, step = _checkpoint_files(tmp_path / "final"), _checkpoint_files(tmp_path / "step=4")
    models = parse_models([f"sft={final}", str(final), str(step)])
    assert [(m.label, m.path) for m in models] == [("sft", final), ("final", final), ("step=4", step)]
    with pytest.raises(CheckpointError, match="'nowhere=.*': model path .* is not a directory"):
        parse_models([f"nowhere={tmp_path / 'missing'}"])
    with pytest.raises(CheckpointError, match="no weights"):
        parse_models([str(_checkpoint_files(tmp_path / "empty", weights=False))])
    (final / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="has no model_type"):
        parse_models([str(final)])
    with pytest.raises(CheckpointError, match="several checkpoints are labelled \\['x'\\]"):
        parse_models([f"x={step}", f"x={step}"])
