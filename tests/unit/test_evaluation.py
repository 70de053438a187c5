"""Evaluation aggregates: EM/F1 over gold aliases, validity, tool calls, per question type and per hop count."""

import json

import pytest

from controller.stages.evaluation import (
    QuestionScore,
    evaluate,
    evaluate_pass_at_k,
    pass_ks,
    restore,
    restore_pass_at_k,
    summarize,
)
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
    assert result.by_hops["3"] == {"n": 1, "em": 0.0, "em_ci": [0.0, 0.0], "f1": 0.5, "valid": 1.0, "tool_calls": 1.0}
    assert result.em_low <= result.exact_match <= result.em_high and result.row()["em_ci"] == [0.0, 1.0]
    assert json.loads(json.dumps(result.by_type))["unknown"]["em"] == 1.0


def test_summarize_of_nothing_is_zero_not_an_error():
    result = summarize("base", "synthetic", [])
    assert (result.count, result.exact_match, result.types, result.hops) == (0, 0.0, {}, {})


class FakeRollout:
    """Answers GenerateGroups with fixed trace texts; records the sampling it was asked for."""

    address = "fake:0"

    def __init__(self, traces: dict[str, rpb.Trace | list[rpb.Trace]]) -> None:
        self.traces = traces
        self.sampling = None
        self.calls = []  # (number of tasks, group size) of every call

    def generate_groups(self, tasks, group_size, sampling):
        self.sampling = sampling
        self.calls.append((len(tasks), group_size))
        groups = [rpb.Group(task_id=t.id, traces=self._group(t.id, group_size)) for t in tasks]
        return rpb.GenerateGroupsResponse(groups=groups, policy_version=3)

    def _group(self, task_id, group_size):
        traces = self.traces[task_id]
        return traces if isinstance(traces, list) else [traces] * group_size


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
    assert result.question_em == {"a": 1.0, "b": 0.0, "c": 0.0}  # pairs questions across stages
    assert result.em_low <= result.exact_match <= result.em_high
    assert rollout.calls == [(3, 1)]  # every question in one batch


def test_evaluation_of_hundreds_of_questions_is_one_batch():
    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    tasks = [Task(f"q{i}", "Where was Ana Vell born?", ("Velgrad",), hops=2, tools=(SEARCH,)) for i in range(400)]
    rollout = FakeRollout({t.id: _answered(t, "Velgrad" if i % 4 else "Oskar") for i, t in enumerate(tasks)})
    result, records = evaluate("base", "world", tasks, rollout, config)
    assert rollout.calls == [(400, 1)] and len(records) == 400
    assert result.exact_match == 0.75 and result.em_low < 0.75 < result.em_high
    assert result.em_high - result.em_low == pytest.approx(2 * 1.96 * (0.75 * 0.25 / 400) ** 0.5, rel=0.15)


def test_pass_at_k_samples_at_the_rollout_temperature_in_one_batch():
    config = load_config(
        overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32", "rollout.temperature=0.8"]
        + ["rollout.top_p=0.9", "eval.pass_samples=8", "eval.bootstrap_resamples=2000"]
    )
    easy = Task("a", "Where was Ana Vell born?", ("Velgrad",), hops=2, tools=(SEARCH,))
    hard = Task("b", "Which country holds Velgrad?", ("Oskar",), hops=3, tools=(SEARCH,))
    never = Task("c", "Who?", ("Nobody",), hops=2, tools=(SEARCH,))
    rollout = FakeRollout(
        {
            "a": [_answered(easy, "Velgrad")] * 8,
            "b": [_answered(hard, "Oskar")] * 2 + [_answered(hard, "Velgrad")] * 6,
            "c": _answered(never, "Velgrad"),
        }
    )
    result, records = evaluate_pass_at_k("sft", "world", [easy, hard, never], rollout, config, 8)
    assert rollout.calls == [(3, 8)]
    assert (rollout.sampling.temperature, rollout.sampling.top_p) == (pytest.approx(0.8), pytest.approx(0.9))
    assert result.correct == {"a": 8, "b": 2, "c": 0} and list(result.values) == [1, 4, 8]
    assert result.values[1].estimate == pytest.approx((1 + 2 / 8 + 0) / 3)
    assert result.values[4].estimate == pytest.approx((1 + (1 - 15 / 70) + 0) / 3)  # 1 - C(6,4)/C(8,4)
    assert result.values[8].estimate == pytest.approx(2 / 3)
    assert all(v.low <= v.estimate <= v.high for v in result.values.values())
    assert len(records) == 24 and [r["sample"] for r in records[:8]] == list(range(8))
    assert {"dataset", "task_id", "exact_match"} <= set(records[0])
    row = result.row()
    assert row["pass@4_ci"] == result.values[4].bounds and row["samples"] == 8 and row["temperature"] == 0.8
    assert pass_ks(2) == [1] and pass_ks(5) == [1, 4] and pass_ks(16) == [1, 4, 8]


def test_a_short_group_is_an_error_not_a_wrong_pass_at_k():
    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    task = Task("a", "Where was Ana Vell born?", ("Velgrad",), hops=2, tools=(SEARCH,))
    rollout = FakeRollout({"a": [_answered(task, "Velgrad")] * 3})
    with pytest.raises(RuntimeError, match="other than 4 trace"):
        evaluate_pass_at_k("sft", "world", [task], rollout, config, 4)


def _json_rows(records):
    return [json.loads(json.dumps(r)) for r in records]


def test_a_finished_evaluation_is_read_back_as_it_was_measured():
    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    tasks = [
        Task(f"q{i}", "Where was Ana Vell born?", ("Velgrad",), hops=2 + i % 2, question_type="bridge", tools=(SEARCH,))
        for i in range(6)
    ]
    rollout = FakeRollout({t.id: _answered(t, "Velgrad" if i % 3 else "Oskar") for i, t in enumerate(tasks)})
    measured, records = evaluate("sft", "world", tasks, rollout, config)
    again = restore("sft", "world", tasks, _json_rows(records), config)
    assert again.row() == {**measured.row(), "seconds": pytest.approx(measured.seconds, abs=1e-3)}
    assert again.question_em == measured.question_em and again.by_hops == measured.by_hops
    assert again.policy_version == 3


def test_an_incomplete_or_foreign_trace_file_is_not_read_back():
    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    tasks = [Task(f"q{i}", "Where was Ana Vell born?", ("Velgrad",), hops=2, tools=(SEARCH,)) for i in range(3)]
    rollout = FakeRollout({t.id: _answered(t, "Velgrad") for t in tasks})
    _, records = evaluate("sft", "world", tasks, rollout, config)
    rows = _json_rows(records)
    assert restore("sft", "world", tasks, rows[:2], config) is None  # interrupted
    assert restore("grpo", "world", tasks, rows, config) is None  # another checkpoint's rows
    assert restore("sft", "world", tasks[:2], rows, config) is None  # the question set changed
    assert restore("sft", "world", tasks, rows + rows[:1], config) is None  # a question twice


def test_pass_at_k_is_read_back_only_with_every_sample():
    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    easy = Task("a", "Where was Ana Vell born?", ("Velgrad",), hops=2, tools=(SEARCH,))
    hard = Task("b", "Which country holds Velgrad?", ("Oskar",), hops=3, tools=(SEARCH,))
    rollout = FakeRollout(
        {"a": [_answered(easy, "Velgrad")] * 4, "b": [_answered(hard, "Oskar")] + [_answered(hard, "x")] * 3}
    )
    measured, records = evaluate_pass_at_k("sft", "world", [easy, hard], rollout, config, 4)
    again = restore_pass_at_k("sft", "world", [easy, hard], _json_rows(records), 4, config)
    assert again.correct == measured.correct and again.values == measured.values
    assert restore_pass_at_k("sft", "world", [easy, hard], _json_rows(records)[:-1], 4, config) is None
    assert restore_pass_at_k("sft", "world", [easy, hard], _json_rows(records), 8, config) is None


def _checkpoint_files(directory, weights=True):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "tokenizer.json").write_text("{}")
    if weights:
        (directory / "model.safetensors").write_bytes(b"")
    return directory


def test_model_values_are_checked_before_anything_starts(tmp_path):
    from controller.commands.eval import CheckpointError, parse_models

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


class FakeServices:
    """Starts a FakeRollout per checkpoint and counts the engines started and stopped."""

    def __init__(self, traces):
        self.traces = traces
        self.started, self.stopped = [], []

    def rollout(self, path):
        self.started.append(path)
        return path, _ClosableRollout(self.traces)

    def stop_role(self, actor):
        self.stopped.append(actor)


class _ClosableRollout(FakeRollout):
    def close(self):
        pass


def test_resumed_evaluation_starts_no_engine_for_a_finished_checkpoint(tmp_path):
    from controller.commands.eval import Checkpoint, Evaluation
    from controller.stages.taskdata import Dataset

    config = load_config(overrides=["rollout.max_turns=3", "rollout.max_tokens_per_turn=32"])
    tasks = [Task(f"q{i}", "Where was Ana Vell born?", ("Velgrad",), hops=2, tools=(SEARCH,)) for i in range(4)]
    traces = {t.id: _answered(t, "Velgrad" if i % 2 else "Oskar") for i, t in enumerate(tasks)}
    models = [Checkpoint("sft-10", tmp_path / "a"), Checkpoint("sft-20", tmp_path / "b")]
    first = FakeServices(traces)
    Evaluation(config, tmp_path, [Dataset("world", "synthetic", tasks)]).evaluate_model(first, models[0])
    services = FakeServices(traces)
    evaluation = Evaluation(config, tmp_path, [Dataset("world", "synthetic", tasks)], resume=True)
    for model in models:
        evaluation.evaluate_model(services, model)
    assert services.started == [str(tmp_path / "b")] and services.stopped == services.started
    assert [(r.stage, r.exact_match) for r in evaluation.results] == [("sft-10", 0.5), ("sft-20", 0.5)]
    assert len(evaluation.gains()) == 1
    assert (tmp_path / "traces" / "sft-20-world.jsonl").is_file()
