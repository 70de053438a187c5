"""Trace grammar: exact rendering, round trips, and one test per FormatReason."""

import json

import pytest

from mtr.grammar import (
    DEFAULT_SYSTEM_PROMPT,
    IM_END,
    AssistantTurn,
    FormatReason,
    ToolCall,
    ToolTurn,
    Trace,
    TraceFormatError,
    from_openai,
    parse_assistant_turn,
    parse_trace,
    render,
    render_assistant_turn,
    render_observation,
    render_prompt,
    render_segments,
    to_openai,
)

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the documents.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}},
            "required": ["query"],
        },
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look up an entity's attribute.",
        "parameters": {"type": "object", "properties": {"entity": {"type": "string"}}, "required": ["entity"]},
    },
}
TOOLS = (SEARCH, LOOKUP)


def call_turn(think: str, name: str, **arguments) -> AssistantTurn:
    return AssistantTurn(think=think, tool_call=ToolCall(name=name, arguments=arguments))


def make_trace(calls: int) -> Trace:
    turns: list = []
    for i in range(calls):
        turns.append(call_turn(f"step {i}", "search", query=f"q{i}", top_k=2))
        turns.append(ToolTurn({"results": [{"title": f"Doc {i}", "text": "Zoë lives in Köln."}]}))
    turns.append(AssistantTurn(think="Done: Köln, 東京 not needed.", answer="Köln"))
    return Trace(question="Where does Zoë live? «quoted»", tools=TOOLS, turns=tuple(turns))


def reason_of(excinfo) -> FormatReason:
    return excinfo.value.reason


# ---- rendering -----------------------------------------------------------------------------------------------


def test_render_prompt_exact_bytes():
    prompt = render_prompt("Who?", [SEARCH], system="Be brief.")
    expected = (
        "<|im_start|>system\nBe brief.\n<tools>\n" + json.dumps([SEARCH]) + "\n</tools><|im_end|>\n"
        "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt == expected


def test_render_turns_and_observation_exact_bytes():
    call = call_turn("find it", "search", query="Köln")
    assert render_assistant_turn(call) == (
        '<think>find it</think>\n<tool_call>{"name": "search", "arguments": {"query": "Köln"}}</tool_call><|im_end|>'
    )
    final = AssistantTurn(think="ok", answer="Köln")
    assert render_assistant_turn(final) == "<think>ok</think>\n<answer>Köln</answer><|im_end|>"
    assert render_observation({"b": 1, "a": "é"}) == (
        '\n<|im_start|>tool\n<tool_response>{"b": 1, "a": "é"}</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )


def test_render_keeps_insertion_order_not_sorted():
    rendered = render_assistant_turn(call_turn("", "search", top_k=1, query="x"))
    assert '{"top_k": 1, "query": "x"}' in rendered


def test_default_system_prompt_teaches_the_grammar():
    for tag in ("<think>", "<tool_call>", "<tool_response>", "<answer>"):
        assert tag in DEFAULT_SYSTEM_PROMPT
    assert render_prompt("q", []).startswith("<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT)


@pytest.mark.parametrize("calls", [0, 1, 3])
def test_segments_concatenate_to_render_with_right_flags(calls):
    trace = make_trace(calls)
    segments = render_segments(trace)
    assert "".join(s.text for s in segments) == render(trace)
    assert [s.trainable for s in segments] == [False] + [True, False] * calls + [True]
    assert all(s.text.endswith(IM_END) for s in segments if s.trainable)
    assert segments[0].text == render_prompt(trace.question, trace.tools)


def test_unfinished_trace_renders_a_generation_prompt():
    trace = Trace(question="q", tools=TOOLS, turns=(call_turn("t", "search", query="x"), ToolTurn({"r": 1})))
    assert render(trace).endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert trace.answer is None and trace.assistant_turns == 1


def test_trace_properties():
    trace = make_trace(3)
    assert trace.answer == "Köln"
    assert trace.assistant_turns == 4
    assert [c.arguments["query"] for c in trace.tool_calls] == ["q0", "q1", "q2"]


def test_trace_rejects_bad_turn_order():
    with pytest.raises(ValueError, match="has no observation"):
        Trace("q", TOOLS, (call_turn("", "search", query="x"), AssistantTurn("", answer="a")))
    with pytest.raises(ValueError, match="must follow an assistant tool call"):
        Trace("q", TOOLS, (ToolTurn({}),))
    with pytest.raises(ValueError, match="must be the last turn"):
        Trace("q", TOOLS, (AssistantTurn("", answer="a"), AssistantTurn("", answer="b")))


def test_assistant_turn_needs_exactly_one_action_and_no_closing_tags():
    with pytest.raises(ValueError, match="exactly one"):
        AssistantTurn(think="x")
    with pytest.raises(ValueError, match="must not contain"):
        AssistantTurn(think="a</think>b", answer="c")


# ---- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("calls", [0, 1, 3])
def test_render_parse_round_trip(calls):
    trace = make_trace(calls)
    assert parse_trace(render(trace)) == trace
    assert parse_trace(render(trace), tools=TOOLS, max_turns=calls + 1) == trace


@pytest.mark.parametrize("calls", [0, 1, 3])
def test_openai_round_trip(calls):
    trace = make_trace(calls)
    record = to_openai(trace)
    assert from_openai(json.loads(json.dumps(record))) == trace


def test_openai_layout():
    record = to_openai(make_trace(1))
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    call = record["messages"][2]["tool_calls"][0]
    assert call["id"] == "call_0" and call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == {"query": "q0", "top_k": 2}
    assert record["messages"][2]["content"] == "<think>step 0</think>"
    assert record["messages"][3]["tool_call_id"] == "call_0"
    assert isinstance(record["messages"][3]["content"], str)
    assert record["messages"][4]["content"] == "<think>Done: Köln, 東京 not needed.</think>\n<answer>Köln</answer>"
    assert record["tools"] == list(TOOLS)


def test_from_openai_bad_records():
    with pytest.raises(ValueError, match="'messages' list"):
        from_openai({"messages": "hi"})
    with pytest.raises(ValueError, match="needs a user message"):
        from_openai({"messages": [{"role": "system", "content": "s"}]})
    record = to_openai(make_trace(1))
    record["messages"][3]["tool_call_id"] = "call_9"
    with pytest.raises(ValueError, match="does not answer call 'call_0'"):
        from_openai(record)
    record = to_openai(make_trace(1))
    record["messages"][2]["tool_calls"][0]["function"]["name"] = "fly"
    with pytest.raises(TraceFormatError) as excinfo:
        from_openai(record)
    assert reason_of(excinfo) is FormatReason.UNKNOWN_TOOL and excinfo.value.turn == 0
    record = to_openai(make_trace(1))
    del record["messages"][-1]
    with pytest.raises(TraceFormatError) as excinfo:
        from_openai(record)
    assert reason_of(excinfo) is FormatReason.NO_ANSWER


# ---- parsing one turn ----------------------------------------------------------------------------------------


def test_parse_assistant_turn_accepts_messy_but_valid_text():
    text = (
        '  <think>hmm</think>\n\n<tool_call> {"name": "search", "arguments": {"query": "x"}} </tool_call><|im_end|>\n'
    )
    assert parse_assistant_turn(text, TOOLS) == call_turn("hmm", "search", query="x")
    assert parse_assistant_turn("<answer>Paris</answer>") == AssistantTurn(think="", answer="Paris")
    string_args = '<tool_call>{"name": "lookup", "arguments": "{\\"entity\\": \\"Köln\\"}"}</tool_call>'
    assert parse_assistant_turn(string_args, TOOLS) == call_turn("", "lookup", entity="Köln")
    # Without tools nothing is checked against a schema.
    assert parse_assistant_turn('<tool_call>{"name": "fly", "arguments": {}}</tool_call>').tool_call.name == "fly"


@pytest.mark.parametrize(
    ("text", "reason", "message"),
    [
        ("  \n<|im_end|>", FormatReason.EMPTY, "empty"),
        ("<think>still thinking", FormatReason.UNCLOSED_TAG, "<think> is never closed"),
        ('<think>a</think><tool_call>{"name": "search"', FormatReason.UNCLOSED_TAG, "<tool_call> is never closed"),
        ('<tool_call>{"name": "search", "arguments": {</tool_call>', FormatReason.INVALID_JSON, "not valid JSON"),
        ('<tool_call>{"name": "search", "arguments": "{oops"}</tool_call>', FormatReason.INVALID_JSON, '"arguments"'),
        ('<tool_call>["search"]</tool_call>', FormatReason.MALFORMED_TOOL_CALL, '"name" and "arguments"'),
        ('<tool_call>{"name": "search", "arguments": [1]}</tool_call>', FormatReason.MALFORMED_TOOL_CALL, "object"),
        ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', FormatReason.UNKNOWN_TOOL, "'fly'"),
        (
            '<tool_call>{"name": "search", "arguments": {"top_k": 2}}</tool_call>',
            FormatReason.SCHEMA_VIOLATION,
            "query",
        ),
        ("<think>only thoughts</think>", FormatReason.NO_ACTION, "no <tool_call> and no <answer>"),
        ("<answer>a</answer><answer>b</answer>", FormatReason.REPEATED_TAG, "2 <answer> blocks"),
        ("<think>x</think><answer> </answer>", FormatReason.NO_ANSWER, "<answer> is empty"),
        ("Sure! <answer>Paris</answer>", FormatReason.UNEXPECTED_TEXT, "text outside the tags"),
        ("<answer>Paris</answer><think>late</think>", FormatReason.UNEXPECTED_TEXT, "<think> must come before"),
        (
            '<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call><answer>a</answer>',
            FormatReason.BOTH_CALL_AND_ANSWER,
            "either call a tool or answer",
        ),
    ],
)
def test_each_turn_format_reason(text, reason, message):
    with pytest.raises(TraceFormatError) as excinfo:
        parse_assistant_turn(text, TOOLS)
    assert reason_of(excinfo) is reason
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith(f"[{reason.value}]")


def test_schema_violation_message_names_tool_and_path():
    with pytest.raises(TraceFormatError) as excinfo:
        parse_assistant_turn('<tool_call>{"name": "search", "arguments": {"query": 3}}</tool_call>', TOOLS)
    assert "'search'" in str(excinfo.value) and "$.query: 3 is not of type 'string'" in str(excinfo.value)


# ---- parsing whole traces ------------------------------------------------------------------------------------


def test_parse_trace_reports_turn_index():
    trace = make_trace(3)
    text = render(trace).replace('"query": "q2"', '"query": 2')
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(text)
    assert reason_of(excinfo) is FormatReason.SCHEMA_VIOLATION
    assert excinfo.value.turn == 2
    assert "in assistant turn 2" in str(excinfo.value)


def test_parse_trace_uses_given_tools_over_listed_ones():
    text = render(make_trace(1))
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(text, tools=[LOOKUP])
    assert reason_of(excinfo) is FormatReason.UNKNOWN_TOOL and "offered: lookup" in str(excinfo.value)


def test_parse_trace_over_turn_budget():
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(render(make_trace(3)), max_turns=3)
    assert reason_of(excinfo) is FormatReason.OVER_TURN_BUDGET
    assert "4 assistant turns exceed the budget of 3" in str(excinfo.value)


def test_parse_trace_without_answer():
    unfinished = Trace("q", TOOLS, (call_turn("t", "search", query="x"), ToolTurn({"r": 1})))
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(render(unfinished))
    assert reason_of(excinfo) is FormatReason.NO_ANSWER and excinfo.value.turn == 0
    just_prompt = render_prompt("q", TOOLS)
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(just_prompt)
    assert reason_of(excinfo) is FormatReason.NO_ANSWER and excinfo.value.turn is None


def test_parse_trace_truncated_generation_is_unclosed():
    text = render_prompt("q", TOOLS) + '<think>let me</think>\n<tool_call>{"name": "sea'
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(text)
    assert reason_of(excinfo) is FormatReason.UNCLOSED_TAG and excinfo.value.turn == 0


def test_parse_trace_structure_errors():
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace("")
    assert reason_of(excinfo) is FormatReason.EMPTY
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace("hello " + render(make_trace(0)))
    assert reason_of(excinfo) is FormatReason.UNEXPECTED_TEXT and "before the first" in str(excinfo.value)
    # Two assistant turns in a row: the tool call got no response.
    call, _, final = make_trace(1).turns
    text = render_prompt("q", TOOLS) + render_assistant_turn(call) + "\n<|im_start|>assistant\n"
    text += render_assistant_turn(final)
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(text)
    assert reason_of(excinfo) is FormatReason.UNEXPECTED_TEXT and "expected a tool block" in str(excinfo.value)


def test_parse_trace_bad_observation_json():
    text = render(make_trace(1)).replace('<tool_response>{"results"', "<tool_response>{results")
    with pytest.raises(TraceFormatError) as excinfo:
        parse_trace(text)
    assert reason_of(excinfo) is FormatReason.INVALID_JSON and "tool response" in str(excinfo.value)


def test_error_excerpt_is_short():
    with pytest.raises(TraceFormatError) as excinfo:
        parse_assistant_turn("<think>" + "x" * 500)
    assert len(str(excinfo.value)) < 200
