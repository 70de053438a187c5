"""The trace grammar: the one rendering of think -> act -> observe traces, and a parser that says why one is bad.

What the learner trains on must be byte-identical to what the rollout engine sees, so every service renders
through `render` / `render_segments` here (ChatML tags, JSON dumped in insertion order with
`ensure_ascii=False`). Generated text comes back through `parse_assistant_turn` / `parse_trace`, which
raise `TraceFormatError` with a `FormatReason` the reward can count. Stored traces use the OpenAI chat
layout (`to_openai` / `from_openai`) that common fine-tuning tools read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from mtr.toolschema import argument_errors, tools_by_name

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions by calling tools. Think step by step inside <think>...</think>. "
    'To use a tool, write one call per turn as <tool_call>{"name": ..., "arguments": {...}}</tool_call> '
    "and read the result in the <tool_response> that follows. When you know the answer, finish with "
    "<answer>...</answer> holding only the answer: a few words, not a sentence."
)

_EXCERPT = 60
_OPEN_TAG = re.compile(r"<(think|tool_call|answer)>")


# ---------------------------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(frozen=True)
class AssistantTurn:
    """One policy turn: a thought plus either a tool call or the final answer."""

    think: str
    tool_call: ToolCall | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        if (self.tool_call is None) == (self.answer is None):
            raise ValueError("an assistant turn needs exactly one of tool_call or answer")
        if self.answer is not None and not self.answer.strip():
            raise ValueError("an assistant turn's answer must not be empty (use tool_call for a non-final turn)")
        # A closing tag inside its own field would render text that parses back differently.
        for field, value, tag in (("think", self.think, "</think>"), ("answer", self.answer or "", "</answer>")):
            if tag in value or IM_START in value or IM_END in value:
                raise ValueError(f"assistant turn {field} must not contain {tag}, {IM_START} or {IM_END}: {value!r}")


@dataclass(frozen=True)
class ToolTurn:
    """The tool's JSON observation answering the preceding tool call."""

    observation: dict

    def __post_init__(self) -> None:
        if not isinstance(self.observation, dict):
            raise TypeError(f"a tool observation must be a JSON object (dict), got {type(self.observation).__name__}")


@dataclass(frozen=True)
class Trace:
    """A question, the tools offered, and the turns so far.

    A trace may be unfinished (ending in a tool call or an observation) while a rollout is running; its
    rendering then ends where the model continues. Turn order is checked here so no renderer meets nonsense.
    """

    question: str
    tools: tuple[dict, ...]
    turns: tuple[AssistantTurn | ToolTurn, ...]
    system: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "turns", tuple(self.turns))
        _check_turn_order(self.turns)

    @property
    def answer(self) -> str | None:
        """The final answer, or None while the trace is unfinished."""
        last = self.turns[-1] if self.turns else None
        return last.answer if isinstance(last, AssistantTurn) else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [t.tool_call for t in self.turns if isinstance(t, AssistantTurn) and t.tool_call is not None]

    @property
    def assistant_turns(self) -> int:
        return sum(isinstance(t, AssistantTurn) for t in self.turns)


@dataclass(frozen=True)
class Segment:
    """A slice of rendered text; trainable slices were written by the policy (loss mask 1)."""

    text: str
    trainable: bool


def _check_turn_order(turns: tuple[AssistantTurn | ToolTurn, ...]) -> None:
    awaiting_observation = False
    for index, turn in enumerate(turns):
        if isinstance(turn, ToolTurn):
            if not awaiting_observation:
                raise ValueError(f"trace turn {index}: a tool observation must follow an assistant tool call")
            awaiting_observation = False
        elif isinstance(turn, AssistantTurn):
            if awaiting_observation:
                raise ValueError(f"trace turn {index}: the tool call of turn {index - 1} has no observation")
            if turn.answer is not None and index != len(turns) - 1:
                raise ValueError(f"trace turn {index}: the answer turn must be the last turn")
            awaiting_observation = turn.tool_call is not None
        else:
            raise TypeError(f"trace turn {index}: expected AssistantTurn or ToolTurn, got {type(turn).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_prompt(question: str, tools: Sequence[dict], system: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """System block (with the tool list) and user block, ending in the assistant header ready for generation."""
    return (
        f"{IM_START}system\n{system}\n<tools>\n{_dumps(list(tools))}\n</tools>{IM_END}\n"
        f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
    )


def render_assistant_turn(turn: AssistantTurn) -> str:
    """The policy-written text of one turn, including the closing <|im_end|> the model must learn to emit."""
    if turn.tool_call is not None:
        call = _dumps({"name": turn.tool_call.name, "arguments": turn.tool_call.arguments})
        return f"<think>{turn.think}</think>\n<tool_call>{call}</tool_call>{IM_END}"
    return f"<think>{turn.think}</think>\n<answer>{turn.answer}</answer>{IM_END}"


def render_observation(observation: dict) -> str:
    """The tool block after a call, ending in the next assistant header (so generation can continue)."""
    return f"\n{IM_START}tool\n<tool_response>{_dumps(observation)}</tool_response>{IM_END}\n{IM_START}assistant\n"


def render_segments(trace: Trace) -> list[Segment]:
    """The rendering split by author: prompt and observations are not trainable, assistant turns are."""
    segments = [Segment(render_prompt(trace.question, trace.tools, trace.system), trainable=False)]
    for turn in trace.turns:
        if isinstance(turn, AssistantTurn):
            segments.append(Segment(render_assistant_turn(turn), trainable=True))
        else:
            segments.append(Segment(render_observation(turn.observation), trainable=False))
    return segments


def render(trace: Trace) -> str:
    return "".join(segment.text for segment in render_segments(trace))


# ---------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------


class FormatReason(str, Enum):
    """Why a trace or turn does not follow the grammar; counted separately by the reward."""

    EMPTY = "empty"
    UNCLOSED_TAG = "unclosed_tag"
    INVALID_JSON = "invalid_json"
    MALFORMED_TOOL_CALL = "malformed_tool_call"  # JSON, but not {"name": str, "arguments": object}
    UNKNOWN_TOOL = "unknown_tool"
    SCHEMA_VIOLATION = "schema_violation"
    NO_ACTION = "no_action"  # a turn with neither <tool_call> nor <answer>
    REPEATED_TAG = "repeated_tag"  # e.g. two tool calls in one turn
    NO_ANSWER = "no_answer"
    OVER_TURN_BUDGET = "over_turn_budget"
    UNEXPECTED_TEXT = "unexpected_text"
    BOTH_CALL_AND_ANSWER = "both_call_and_answer"


class TraceFormatError(ValueError):
    """A grammar violation: `.reason` for counting, `.turn` (0-based assistant turn index, or None) for locating."""

    def __init__(self, reason: FormatReason, detail: str, turn: int | None = None, excerpt: str | None = None):
        where = "" if turn is None else f" in assistant turn {turn}"
        near = "" if excerpt is None else f", near {_excerpt(excerpt)!r}"
        super().__init__(f"[{reason.value}] {detail}{where}{near}")
        self.reason = reason
        self.turn = turn
        self.detail = detail


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def parse_assistant_turn(text: str, tools: Sequence[dict] | None = None) -> AssistantTurn:
    """Parse one generated assistant turn (trailing <|im_end|> and surrounding whitespace allowed).

    With `tools`, the call must name one of them and its arguments must pass that tool's schema.
    """
    return _parse_turn(text, tools, turn=None)


def _parse_turn(text: str, tools: Sequence[dict] | None, turn: int | None) -> AssistantTurn:
    body = text.strip()
    body = body[: -len(IM_END)].rstrip() if body.endswith(IM_END) else body
    if not body:
        raise TraceFormatError(FormatReason.EMPTY, "the assistant turn is empty", turn)
    blocks = _scan_blocks(body, turn)
    tags = [tag for tag, _ in blocks]
    for tag in ("think", "tool_call", "answer"):
        if tags.count(tag) > 1:
            raise TraceFormatError(FormatReason.REPEATED_TAG, f"{tags.count(tag)} <{tag}> blocks (one per turn)", turn)
    if "think" in tags and tags[0] != "think":
        raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, "<think> must come before the action", turn, body)
    inner = dict(blocks)
    if "tool_call" in inner and "answer" in inner:
        raise TraceFormatError(FormatReason.BOTH_CALL_AND_ANSWER, "a turn must either call a tool or answer", turn)
    if "answer" in inner:
        if not inner["answer"].strip():
            raise TraceFormatError(FormatReason.NO_ANSWER, "the <answer> is empty", turn)
        return AssistantTurn(think=inner.get("think", ""), answer=inner["answer"])
    if "tool_call" not in inner:
        raise TraceFormatError(FormatReason.NO_ACTION, "no <tool_call> and no <answer>", turn, body)
    call = _parse_call(inner["tool_call"], turn)
    if tools is not None:
        _check_call(call, tools, turn)
    return AssistantTurn(think=inner.get("think", ""), tool_call=call)


def _scan_blocks(body: str, turn: int | None) -> list[tuple[str, str]]:
    """Split a turn into (tag, inner text) blocks, rejecting anything but whitespace between them."""
    blocks: list[tuple[str, str]] = []
    position = 0
    while True:
        match = _OPEN_TAG.search(body, position)
        gap = body[position : match.start() if match else len(body)]
        if gap.strip():
            raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, "text outside the tags", turn, gap.strip())
        if match is None:
            return blocks
        tag = match.group(1)
        close = body.find(f"</{tag}>", match.end())
        if close < 0:
            raise TraceFormatError(FormatReason.UNCLOSED_TAG, f"<{tag}> is never closed", turn, body[match.start() :])
        blocks.append((tag, body[match.end() : close]))
        position = close + len(f"</{tag}>")


def _parse_call(text: str, turn: int | None) -> ToolCall:
    payload = _loads(text, "the <tool_call> body", turn)
    if not isinstance(payload, dict) or set(payload) != {"name", "arguments"}:
        detail = 'a tool call must be a JSON object with exactly the keys "name" and "arguments"'
        raise TraceFormatError(FormatReason.MALFORMED_TOOL_CALL, detail, turn, text)
    name, arguments = payload["name"], payload["arguments"]
    if not isinstance(name, str) or not name:
        raise TraceFormatError(FormatReason.MALFORMED_TOOL_CALL, 'the tool call "name" must be a string', turn, text)
    if isinstance(arguments, str):  # OpenAI-style: arguments as a JSON string
        arguments = _loads(arguments, 'the "arguments" string', turn)
    if not isinstance(arguments, dict):
        detail = f'the tool call "arguments" must be a JSON object, got {type(arguments).__name__}'
        raise TraceFormatError(FormatReason.MALFORMED_TOOL_CALL, detail, turn, text)
    return ToolCall(name=name, arguments=arguments)


def _check_call(call: ToolCall, tools: Sequence[dict], turn: int | None) -> None:
    known = tools_by_name(tools)
    if call.name not in known:
        detail = f"unknown tool {call.name!r} (offered: {', '.join(sorted(known)) or 'none'})"
        raise TraceFormatError(FormatReason.UNKNOWN_TOOL, detail, turn)
    errors = argument_errors(known[call.name], call.arguments)
    if errors:
        detail = f"arguments of {call.name!r} fail its schema: {'; '.join(errors)}"
        raise TraceFormatError(FormatReason.SCHEMA_VIOLATION, detail, turn)


def _loads(text: str, what: str, turn: int | None) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        detail = f"{what} is not valid JSON ({error.msg} at character {error.pos})"
        raise TraceFormatError(FormatReason.INVALID_JSON, detail, turn, text) from error


@dataclass(frozen=True)
class _Block:
    """One <|im_start|>role ... <|im_end|> block of a rendered trace."""

    role: str
    body: str
    closed: bool


def _split_blocks(text: str) -> list[_Block]:
    head, *chunks = text.split(IM_START)
    if head.strip():
        raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, f"text before the first {IM_START}", None, head)
    blocks = []
    for chunk in chunks:
        role, _, rest = chunk.partition("\n")
        for suffix in (IM_END + "\n", IM_END):
            if rest.endswith(suffix):
                blocks.append(_Block(role, rest[: -len(suffix)], closed=True))
                break
        else:
            blocks.append(_Block(role, rest, closed=False))
    return blocks


def parse_trace(text: str, tools: Sequence[dict] | None = None, max_turns: int | None = None) -> Trace:
    """Parse a full rendered trace back into a Trace; it must end in an answer within `max_turns` turns.

    Tool calls are checked against `tools`, or against the prompt's own <tools> list when `tools` is None.
    """
    if not text.strip():
        raise TraceFormatError(FormatReason.EMPTY, "the trace is empty")
    blocks = _split_blocks(text)
    if [b.role for b in blocks[:2]] != ["system", "user"] or not (blocks[0].closed and blocks[1].closed):
        detail = f"a trace must open with closed system and user blocks, found {[b.role for b in blocks[:2]]}"
        raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, detail, None, text)
    system, listed_tools = _parse_system(blocks[0].body)
    tools = listed_tools if tools is None else tuple(tools)
    conversation = blocks[2:]
    if conversation and conversation[-1].role == "assistant" and not conversation[-1].closed:
        if not conversation[-1].body.strip():  # the bare header an unfinished trace's rendering ends with
            conversation = conversation[:-1]
    assistant_count = sum(b.role == "assistant" for b in conversation)
    if max_turns is not None and assistant_count > max_turns:
        detail = f"{assistant_count} assistant turns exceed the budget of {max_turns}"
        raise TraceFormatError(FormatReason.OVER_TURN_BUDGET, detail, max_turns)
    turns = _parse_conversation(conversation, tools)
    trace = Trace(question=blocks[1].body, tools=tools, turns=turns, system=system)
    if trace.answer is None:
        raise TraceFormatError(FormatReason.NO_ANSWER, "the trace ends without an <answer>", _last_turn(trace))
    return trace


def _last_turn(trace: Trace) -> int | None:
    return trace.assistant_turns - 1 if trace.assistant_turns else None


def _parse_system(body: str) -> tuple[str, tuple[dict, ...]]:
    system, marker, listed = body.rpartition("\n<tools>\n")
    if not marker or not listed.endswith("\n</tools>"):
        raise TraceFormatError(
            FormatReason.UNEXPECTED_TEXT, "the system block must end with a <tools> list", None, body
        )
    tools = _loads(listed[: -len("\n</tools>")], "the <tools> list", None)
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise TraceFormatError(FormatReason.INVALID_JSON, "<tools> must hold a JSON list of tool objects", None, listed)
    return system, tuple(tools)


def _parse_conversation(blocks: list[_Block], tools: Sequence[dict]) -> list[AssistantTurn | ToolTurn]:
    turns: list[AssistantTurn | ToolTurn] = []
    turn = -1
    for position, block in enumerate(blocks):
        expected = "assistant" if position % 2 == 0 else "tool"
        if block.role != expected:
            detail = f"expected a {expected} block, found {block.role!r}"
            raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, detail, turn if turn >= 0 else None, block.body)
        last = position == len(blocks) - 1
        if expected == "tool":
            turns.append(ToolTurn(_parse_observation(block, turn)))
            continue
        turn += 1
        if not last and not block.closed:
            raise TraceFormatError(FormatReason.UNCLOSED_TAG, f"no {IM_END} closes the turn", turn, block.body)
        parsed = _parse_turn(block.body, tools, turn)
        if parsed.answer is not None and not last:
            raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, "more blocks follow the final answer", turn)
        turns.append(parsed)
    return turns


def _parse_observation(block: _Block, turn: int) -> dict:
    opening, closing = "<tool_response>", "</tool_response>"
    if not block.body.startswith(opening):
        raise TraceFormatError(FormatReason.UNEXPECTED_TEXT, f"a tool block must hold {opening}", turn, block.body)
    if not (block.closed and block.body.endswith(closing)):
        raise TraceFormatError(FormatReason.UNCLOSED_TAG, f"{opening} is never closed", turn, block.body)
    observation = _loads(block.body[len(opening) : -len(closing)], "the tool response", turn)
    if not isinstance(observation, dict):
        raise TraceFormatError(FormatReason.INVALID_JSON, "a tool response must be a JSON object", turn, block.body)
    return observation


# ---------------------------------------------------------------------------------------------------------------
# OpenAI chat layout (stored traces)
# ---------------------------------------------------------------------------------------------------------------


def to_openai(trace: Trace) -> dict:
    """The trace as {"messages": [...], "tools": [...]} with assistant tool_calls and tool messages."""
    messages: list[dict] = [
        {"role": "system", "content": trace.system},
        {"role": "user", "content": trace.question},
    ]
    calls = 0
    for turn in trace.turns:
        if isinstance(turn, ToolTurn):
            messages.append({"role": "tool", "tool_call_id": f"call_{calls - 1}", "content": _dumps(turn.observation)})
        elif turn.tool_call is not None:
            function = {"name": turn.tool_call.name, "arguments": _dumps(turn.tool_call.arguments)}
            call = {"id": f"call_{calls}", "type": "function", "function": function}
            messages.append({"role": "assistant", "content": f"<think>{turn.think}</think>", "tool_calls": [call]})
            calls += 1
        else:
            content = f"<think>{turn.think}</think>\n<answer>{turn.answer}</answer>"
            messages.append({"role": "assistant", "content": content})
    return {"messages": messages, "tools": list(trace.tools)}


def from_openai(record: dict) -> Trace:
    """Inverse of `to_openai`; a missing system message means the default prompt. The trace must end in an answer."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("an OpenAI record needs a 'messages' list of message objects")
    tools = tuple(record.get("tools") or ())
    system = DEFAULT_SYSTEM_PROMPT
    if messages and messages[0].get("role") == "system":
        system, messages = _content(messages[0], 0), messages[1:]
    if not messages or messages[0].get("role") != "user":
        raise ValueError("an OpenAI record needs a user message after the (optional) system message")
    turns: list[AssistantTurn | ToolTurn] = []
    open_call_id: str | None = None
    for index, message in enumerate(messages[1:], start=1):
        if message.get("role") == "assistant":
            turn = sum(isinstance(t, AssistantTurn) for t in turns)
            parsed, open_call_id = _assistant_from_openai(message, tools or None, turn)
            turns.append(parsed)
        elif message.get("role") == "tool":
            turns.append(ToolTurn(_tool_from_openai(message, open_call_id, index)))
        else:
            raise ValueError(f"OpenAI message {index}: unexpected role {message.get('role')!r}")
    try:
        trace = Trace(question=_content(messages[0], 0), tools=tools, turns=tuple(turns), system=system)
    except (ValueError, TypeError) as error:
        raise ValueError(f"OpenAI record has an invalid turn order: {error}") from error
    if trace.answer is None:
        raise TraceFormatError(FormatReason.NO_ANSWER, "the record ends without an <answer>", _last_turn(trace))
    return trace


def _assistant_from_openai(message: dict, tools: Sequence[dict] | None, turn: int) -> tuple[AssistantTurn, str | None]:
    # Rebuild the rendered turn and parse it, so stored records meet exactly the checks generated text meets.
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise ValueError(f"assistant turn {turn}: content must be a string, got {type(content).__name__}")
    calls = message.get("tool_calls") or []
    if len(calls) > 1:
        raise TraceFormatError(FormatReason.REPEATED_TAG, f"{len(calls)} tool_calls (one per turn)", turn)
    if not calls:
        return _parse_turn(content, tools, turn), None
    function = calls[0].get("function") if isinstance(calls[0], dict) else None
    if not isinstance(function, dict):
        raise TraceFormatError(FormatReason.MALFORMED_TOOL_CALL, "a tool call needs a 'function' object", turn)
    body = _dumps({"name": function.get("name"), "arguments": function.get("arguments")})
    parsed = _parse_turn(f"{content}\n<tool_call>{body}</tool_call>", tools, turn)
    return parsed, calls[0].get("id")


def _tool_from_openai(message: dict, open_call_id: str | None, index: int) -> dict:
    call_id = message.get("tool_call_id")
    if call_id is not None and open_call_id is not None and call_id != open_call_id:
        raise ValueError(f"OpenAI message {index}: tool_call_id {call_id!r} does not answer call {open_call_id!r}")
    content = message.get("content")
    observation = _loads(content, f"tool message {index} content", None) if isinstance(content, str) else content
    if not isinstance(observation, dict):
        raise TraceFormatError(FormatReason.INVALID_JSON, f"tool message {index} content must be a JSON object")
    return observation


def _content(message: dict, index: int) -> str:
    content = message.get("content")
    if not isinstance(content, str):
        raise ValueError(f"OpenAI message {index} ({message.get('role')}): content must be a string")
    return content
