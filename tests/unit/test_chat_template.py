"""Every checkpoint's chat template renders OpenAI messages byte for byte as the trace grammar does."""

import json

import pytest

from mtr.chattemplate import CHAT_TEMPLATE
from mtr.grammar import AssistantTurn, ToolCall, ToolTurn, Trace, render, render_prompt, to_openai

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the corpus.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def _render(messages, tools, add_generation_prompt=False):
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], tools=tools, chat_template=CHAT_TEMPLATE, add_generation_prompt=add_generation_prompt
    )
    return rendered[0]


TRACES = [
    Trace(
        "Where was Ana Vell born? «quoted» 'x'",
        (SEARCH,),
        (
            AssistantTurn("I search.", ToolCall("search", {"query": "Ana Vell – née"})),
            ToolTurn({"results": [{"title": "Ana Vell", "text": "Born in Velgrad, «Oskar»."}]}),
            AssistantTurn("Found.", answer="Velgrad"),
        ),
    ),
    Trace("2 + 2?", (SEARCH,), (AssistantTurn("Easy.", answer="4"),), system="Custom system.\nTwo lines."),
]


@pytest.mark.parametrize("trace", TRACES)
def test_openai_messages_render_as_the_grammar_does(trace):
    record = to_openai(trace)
    assert _render(record["messages"], record["tools"]) == render(trace)
    # vLLM hands templates the arguments already parsed; the bytes must not change.
    parsed = json.loads(json.dumps(record["messages"]))
    for message in parsed:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    assert _render(parsed, record["tools"]) == render(trace)


def test_a_client_request_renders_the_prompt_the_policy_was_trained_on():
    messages = [{"role": "user", "content": "Where was Ana Vell born?"}]
    expected = render_prompt("Where was Ana Vell born?", [SEARCH])
    assert _render(messages, [SEARCH], add_generation_prompt=True) == expected
