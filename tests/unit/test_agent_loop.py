"""The multi-turn loop on a scripted generator and a fake simulator: masks, batching, budgets, the grammar."""

import json

from mtr.grammar import parse_trace, render_observation, render_prompt
from mtr.simclient import ToolResult
from mtr.task import Task
from rollout.agent_loop import LoopLimits, TurnOutput, run_agent_loop

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
CALL = '<think>look</think>\n<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>'
ANSWER = "<think>done</think>\n<answer>Velgrad</answer>"
OBS = {"results": [{"title": "X", "text": "X was born in Velgrad."}]}


class CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


class ScriptedGenerator:
    """Turn t of every sample answers script[t]; records the batch sizes it was asked for."""

    def __init__(self, script, finish="stop"):
        self.script, self.finish, self.batches = script, finish, []

    def generate_turns(self, requests):
        self.batches.append(len(requests))
        outputs = []
        for request in requests:
            text = self.script[min(len(self.batches) - 1, len(self.script) - 1)]
            ids = [ord(c) for c in text][: request.max_tokens]
            finish = self.finish if len(ids) == len(text) else "length"
            outputs.append(TurnOutput(ids, [-0.5] * len(ids), "".join(map(chr, ids)), finish))
        return outputs


class FakeTools:
    def __init__(self):
        self.batches = []

    def call_many(self, calls):
        self.batches.append(len(calls))
        return [ToolResult(OBS, "ok", "", False, "r0") for _ in calls]


def _tasks(n=2):
    return [Task(f"t{i}", f"Where was X{i} born?", ("Velgrad",), tools=(SEARCH,)) for i in range(n)]


def test_masks_text_and_batching():
    generator, tools = ScriptedGenerator([CALL, ANSWER]), FakeTools()
    samples = run_agent_loop(_tasks(2), 3, generator, tools, CharTokenizer(), LoopLimits(4, 200, 10_000))
    assert len(samples) == 6
    assert generator.batches == [6, 6]  # all live sequences of all groups advance together
    assert tools.batches == [6]  # one batched simulator call per turn
    for s in samples:
        assert s.finish_reason == "answer" and s.turns == 2
        prompt = render_prompt(s.task.question, s.task.tools)
        observation = render_observation(OBS)
        expected = prompt + CALL + "<|im_end|>" + observation + ANSWER + "<|im_end|>"
        # Policy text is what the generator produced; the loop adds <|im_end|> text only where EOS ended the turn.
        assert s.text == expected
        trace = parse_trace(s.text, s.task.tools)
        assert trace.answer == "Velgrad"
        mask = "".join(map(str, s.loss_mask))
        assert mask == "0" * len(prompt) + "1" * len(CALL) + "0" * len(observation) + "1" * len(ANSWER)
        assert len(s.token_ids) == len(s.logprobs) == len(s.loss_mask)
        assert all(lp == 0.0 for lp, m in zip(s.logprobs, s.loss_mask, strict=False) if m == 0)
        assert json.loads(s.tool_calls[0].observation_json) == OBS


def test_progress_is_logged_after_each_turn(caplog):
    """A batch of hundreds of evaluation questions runs for minutes: each turn says how many traces are done."""
    caplog.set_level("INFO", logger="mtr.rollout")
    run_agent_loop(
        _tasks(2), 2, ScriptedGenerator([CALL, ANSWER]), FakeTools(), CharTokenizer(), LoopLimits(4, 200, 10_000)
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "mtr.rollout"]
    assert len(lines) == 1 and lines[0].startswith("agent loop: 0/4 traces finished after 1 turns")


def test_turn_budget_and_length_and_malformed():
    limits = LoopLimits(max_turns=2, max_tokens_per_turn=200, max_model_len=10_000)
    always_call = run_agent_loop(_tasks(1), 2, ScriptedGenerator([CALL]), FakeTools(), CharTokenizer(), limits)
    assert {s.finish_reason for s in always_call} == {"turn_budget"}
    short = LoopLimits(max_turns=2, max_tokens_per_turn=10, max_model_len=10_000)
    cut = run_agent_loop(_tasks(1), 2, ScriptedGenerator([CALL]), FakeTools(), CharTokenizer(), short)
    assert {s.finish_reason for s in cut} == {"length"}
    junk = run_agent_loop(_tasks(1), 2, ScriptedGenerator(["<think>no"]), FakeTools(), CharTokenizer(), limits)
    assert {s.finish_reason for s in junk} == {"malformed"}
    bad_json = '<think>x</think>\n<tool_call>{"name": "search"}}</tool_call>'
    tools = FakeTools()
    invalid = run_agent_loop(_tasks(1), 2, ScriptedGenerator([bad_json]), tools, CharTokenizer(), limits)
    assert {s.finish_reason for s in invalid} == {"malformed"} and tools.batches == []


def test_context_exhaustion_stops_before_generating():
    prompt_len = len(render_prompt(_tasks(1)[0].question, (SEARCH,)))
    limits = LoopLimits(max_turns=4, max_tokens_per_turn=50, max_model_len=prompt_len)
    generator = ScriptedGenerator([CALL])
    samples = run_agent_loop(_tasks(1), 2, generator, FakeTools(), CharTokenizer(), limits)
    assert {s.finish_reason for s in samples} == {"length"}
    assert generator.batches == []
