"""Stage 0 pieces without processes: the oracle's hop phrasing, the trace store's recovery, the LLM teacher loop."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from controller.stages.autoagent import Rejected, hop_question
from controller.stages.llmteacher import LLMTeacher, _restore_stop
from controller.stages.tracestore import TraceStore, TraceStoreError
from mtr.config import SynthConfig
from mtr.grammar import AssistantTurn, ToolCall, ToolTurn, Trace, from_openai
from mtr.simclient import ToolResult
from mtr.task import Hop, Task

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
TASK = Task(id="q1", question="Where was Ada born?", answers=("Paris",), tools=(SEARCH,), source="test")


def _trace(answer: str = "Paris") -> Trace:
    turns = (
        AssistantTurn(think="look", tool_call=ToolCall("search", {"query": "Ada"})),
        ToolTurn({"results": [{"title": "Ada", "text": "Ada was born in Paris."}]}),
        AssistantTurn(think="found", answer=answer),
    )
    return Trace(question=TASK.question, tools=(SEARCH,), turns=turns)


@pytest.mark.parametrize(
    ("hop", "earlier", "expected"),
    [
        (
            Hop("#1 >> capital", "Stanley", "Courthouse", "capital"),
            ["Mountrail County"],
            "the capital of Mountrail County",
        ),
        (Hop("", "1932", "Pál Gábor", "date_of_birth"), [], "the date of birth of Pál Gábor"),
        (Hop("", "", "Neil Peart"), [], "what the page on Neil Peart says"),
        (Hop("Who directed X?", "Y", "X"), [], "Who directed X?"),
        (Hop("#3 >> father", "Z", "W"), ["a"], "the father of #3"),
    ],
)
def test_hop_questions_read_as_words(hop, earlier, expected):
    assert hop_question(hop, earlier) == expected


def test_store_writes_openai_records_and_a_ledger_and_skips_decided_questions(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    store.accept("world", TASK, _trace(), "oracle")
    other = Task(id="q2", question="Q?", answers=("A",), source="test")
    store.reject("world", other, "wrong_answer", "oracle")
    record = json.loads((tmp_path / "t.jsonl").read_text())
    assert from_openai(record).answer == "Paris"
    reopened = TraceStore(tmp_path / "t.jsonl")
    assert reopened.done == {"test:q1", "test:q2"}
    stats = reopened.acceptance()["world"]
    assert (stats.attempted, stats.accepted, dict(stats.rejected)) == (2, 1, {"wrong_answer": 1})
    report = reopened.write_report({"world": 3}, 1.5, "oracle")
    assert json.loads((tmp_path / "t.report.json").read_text()) == report
    assert report["datasets"]["world"]["acceptance_rate"] == 0.5 and report["skipped_rows"] == {"world": 3}


def test_store_repairs_a_crash_between_the_trace_and_its_ledger_line(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    store.accept("world", TASK, _trace(), "oracle")
    with (tmp_path / "t.jsonl").open("a") as handle:  # the trace of a question whose ledger line never came
        handle.write(json.dumps({"messages": []}) + "\n")
    with (tmp_path / "t.ledger.jsonl").open("a") as handle:  # and a torn ledger line
        handle.write('{"key": "test:q9", "sta')
    reopened = TraceStore(tmp_path / "t.jsonl")
    assert reopened.done == {"test:q1"}
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "t.ledger.jsonl").read_text().endswith("}\n")


def test_store_refuses_a_traces_file_shorter_than_its_ledger(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    store.accept("world", TASK, _trace(), "oracle")
    (tmp_path / "t.jsonl").write_text("")
    with pytest.raises(TraceStoreError, match="holds 0 traces but .* records 1 accepted"):
        TraceStore(tmp_path / "t.jsonl")


@pytest.mark.parametrize("ledger", [False, True])
def test_store_never_cuts_a_file_it_was_not_writing(tmp_path, ledger):
    """An existing JSONL without its ledger (or with a deleted one): refused, and not a byte changed."""
    if ledger:
        store = TraceStore(tmp_path / "t.jsonl")
        store.accept("world", TASK, _trace(), "oracle")
        (tmp_path / "t.jsonl").write_text("".join(json.dumps({"row": i}) + "\n" for i in range(5)))
    else:
        (tmp_path / "t.jsonl").write_text("".join(json.dumps({"row": i}) + "\n" for i in range(5)))
    before = (tmp_path / "t.jsonl").read_bytes()
    with pytest.raises(TraceStoreError, match="holds 5 lines but its ledger .* not a traces file.*nothing was changed"):
        TraceStore(tmp_path / "t.jsonl")
    assert (tmp_path / "t.jsonl").read_bytes() == before


def test_synth_refuses_to_write_over_the_dataset_it_reads(tmp_path):
    from controller.commands.synth import check_output_is_not_input

    data = tmp_path / "hotpot.jsonl"
    with pytest.raises(TraceStoreError, match="would overwrite the dataset 'hotpotqa:.*hotpot.jsonl'"):
        check_output_is_not_input(data, ["synthetic", f"hotpotqa:{data}"])
    with pytest.raises(TraceStoreError, match="would overwrite"):  # the ledger beside --out counts too
        check_output_is_not_input(tmp_path / "t.jsonl", [f"musique:{tmp_path / 't.ledger.jsonl'}"])
    check_output_is_not_input(tmp_path / "traces.jsonl", ["synthetic", f"hotpotqa:{data}"])


def test_the_report_counts_the_seconds_of_every_resumed_run(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    store.write_report({}, 10.0, "oracle")
    report = TraceStore(tmp_path / "t.jsonl").write_report({}, 2.5, "oracle")
    assert (report["seconds"], report["seconds_total"]) == (2.5, 12.5)


def test_store_names_a_corrupt_ledger_line(tmp_path):
    (tmp_path / "t.ledger.jsonl").write_text('{"key": "a", "status": "accepted", "dataset": "w"}\nnot json\n')
    with pytest.raises(TraceStoreError, match="line 2"):
        TraceStore(tmp_path / "t.jsonl")


def test_restore_stop_closes_the_tag_the_server_stopped_on():
    assert (
        _restore_stop('<think>x</think>\n<tool_call>{"name": "s"')
        == '<think>x</think>\n<tool_call>{"name": "s"</tool_call>'
    )
    assert _restore_stop("<think>x</think>\n<answer>Paris") == "<think>x</think>\n<answer>Paris</answer>"
    assert _restore_stop("<think>x</think>") == "<think>x</think>"


class _ScriptedChat:
    """Stands in for the OpenAI client: answers each request with the next scripted turn."""

    def __init__(self, turns: list[str]) -> None:
        self.turns = list(turns)
        self.requests: list[list[dict]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, **kwargs):
        self.requests.append([dict(m) for m in kwargs["messages"]])
        message = SimpleNamespace(content=self.turns.pop(0))
        return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason="stop")])


class _Simulator:
    def __init__(self) -> None:
        self.calls = []

    def call_many(self, requests):
        self.calls.extend(requests)
        observation = {"results": [{"title": "Ada", "text": "born in Paris"}]}
        return [ToolResult(observation, "ok", "", False, "r0")]


def _teacher(turns: list[str], attempts: int = 1) -> tuple[LLMTeacher, _ScriptedChat]:
    config = SynthConfig(teacher="llm", llm_url="http://127.0.0.1:9", llm_model="m", attempts=attempts)
    teacher = LLMTeacher(config)
    chat = _ScriptedChat(turns)
    teacher._client = chat
    return teacher, chat


def test_llm_teacher_runs_the_tool_loop_and_keeps_a_correct_trace():
    teacher, chat = _teacher(
        [
            '<think>look</think>\n<tool_call>{"name": "search", "arguments": {"query": "Ada"}}',
            "<think>ok</think>\n<answer>Paris",
        ]
    )
    simulator = _Simulator()
    trace = teacher.trace(TASK, simulator)
    assert trace.answer == "Paris" and [c.name for c in trace.tool_calls] == ["search"]
    assert json.loads(simulator.calls[0].arguments_json) == {"query": "Ada"}
    second_request = chat.requests[1]
    assert second_request[-1]["role"] == "user" and second_request[-1]["content"].startswith("<tool_response>")
    assert "<tools>" in second_request[0]["content"]


@pytest.mark.parametrize(
    ("turns", "reason"),
    [
        (["<think>hm</think>\n<answer>Rome"], "wrong_answer"),
        (["no tags at all"], "format_unexpected_text"),
        (['<tool_call>{"name": "fly", "arguments": {}}'], "format_unknown_tool"),
    ],
)
def test_llm_teacher_rejects_with_the_reason(turns, reason):
    teacher, _ = _teacher(turns)
    with pytest.raises(Rejected) as caught:
        teacher.trace(TASK, _Simulator())
    assert caught.value.reason == reason


def test_llm_teacher_tries_again_until_a_sample_is_accepted():
    teacher, chat = _teacher(["<think>a</think>\n<answer>Rome", "<think>b</think>\n<answer>Paris"], attempts=2)
    assert teacher.trace(TASK, _Simulator()).answer == "Paris"
    assert len(chat.requests) == 2
