import json

import pytest

from controller.scoring.advantages import group_advantages, has_signal
from controller.scoring.reward import CallRecord, score_trace
from mtr.config import RewardConfig
from mtr.grammar import AssistantTurn, ToolCall, ToolTurn, Trace, render
from mtr.task import Task

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the corpus.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
TASK = Task("t1", "Where was Ana Vell born?", ("Velgrad",), tools=(SEARCH,))
OBS = {"results": [{"title": "Ana Vell", "text": "Ana Vell was born in Velgrad."}]}


def _trace(answer: str, calls: int = 1) -> tuple[str, list[CallRecord]]:
    turns, records = [], []
    for i in range(calls):
        turns += [AssistantTurn("look", ToolCall("search", {"query": f"Ana Vell {i}"})), ToolTurn(OBS)]
        records.append(CallRecord("search", json.dumps({"query": f"Ana Vell {i}"}), json.dumps(OBS), "ok"))
    turns.append(AssistantTurn("done", answer=answer))
    return render(Trace(TASK.question, TASK.tools, tuple(turns))), records


def test_correct_grounded_trace_gets_full_reward():
    text, calls = _trace("Velgrad")
    r = score_trace(text, TASK, calls, "answer", 4, RewardConfig(w_answer=1.0, w_consistency=0.5))
    assert r.exact_match == 1.0 and r.format_valid == 1.0 and r.grounded == 1.0
    assert r.consistency == pytest.approx(1.0)
    assert r.reward == pytest.approx(1.5)


def test_wrong_ungrounded_answer():
    text, calls = _trace("Ostrania")
    r = score_trace(text, TASK, calls, "answer", 4, RewardConfig())
    assert r.exact_match == 0.0 and r.grounded == 0.0
    assert 0.0 < r.consistency < 1.0


def test_unparsable_trace_gets_only_the_format_penalty():
    text, calls = _trace("Velgrad")
    broken = text.replace("</answer>", "")
    r = score_trace(broken, TASK, calls, "answer", 4, RewardConfig(format_penalty=-0.5))
    assert r.reward == -0.5 and r.exact_match == 0.0 and r.format_valid == 0.0
    assert r.format_error


def test_repeated_calls_and_failed_calls_cost_consistency():
    text, calls = _trace("Velgrad", calls=2)
    repeated = [calls[0], calls[0]]
    r = score_trace(text, TASK, repeated, "answer", 4, RewardConfig())
    assert r.no_repeated_calls == 0.0
    failed = [CallRecord("search", "{}", json.dumps({"error": "bad"}), "invalid_arguments"), calls[1]]
    assert score_trace(text, TASK, failed, "answer", 4, RewardConfig()).schema_valid_calls == 0.5


def test_over_budget_is_unparsable():
    text, calls = _trace("Velgrad", calls=3)
    assert score_trace(text, TASK, calls, "answer", 2, RewardConfig()).format_valid == 0.0


def test_group_advantages():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert sum(adv) == pytest.approx(0.0)
    assert adv[0] == pytest.approx(1.0, rel=1e-4)
    assert group_advantages([2.0, 0.0], normalize_std=False) == [1.0, -1.0]
    assert not has_signal([0.5, 0.5, 0.5])
    assert has_signal([0.5, 0.0])
