"""The offline oracle AutoAgent: writes complete think → act → observe traces from gold decompositions.

Each hop becomes a `search` call through the real simulator; the observation it gets back is what goes
into the trace. Rejection sampling keeps only traces that render and parse, whose every call was
schema-valid, whose observations actually contain each hop's answer, and whose final answer matches gold.
Why a trace was rejected is counted, so a broken tool or corpus shows up as a reason, not a silent drop.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtr.answers import exact_match, normalize_answer
from mtr.grammar import AssistantTurn, ToolCall, ToolTurn, Trace, TraceFormatError, parse_trace, render
from mtr.simclient import SimulatorClient, ToolCallRequest, ToolResult
from mtr.task import Hop, Task


@dataclass
class SynthesisReport:
    accepted: list[tuple[Task, Trace]] = field(default_factory=list)
    attempted: int = 0
    rejected: Counter = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float:
        return len(self.accepted) / self.attempted if self.attempted else 0.0


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def synthesize(tasks: Sequence[Task], simulator: SimulatorClient) -> SynthesisReport:
    report = SynthesisReport()
    for task in tasks:
        report.attempted += 1
        try:
            report.accepted.append((task, oracle_trace(task, simulator)))
        except Rejected as rejection:
            report.rejected[rejection.reason] += 1
    return report


def oracle_trace(task: Task, simulator: SimulatorClient) -> Trace:
    if not task.decomposition:
        raise Rejected("no_decomposition")
    tool_names = {tool["function"]["name"] for tool in task.tools}
    if "search" not in tool_names:
        raise Rejected("no_search_tool")
    turns: list[AssistantTurn | ToolTurn] = []
    found: list[str] = []
    for index, hop in enumerate(task.decomposition):
        tool_name, arguments = "search", {"query": f"{hop.subject} {hop.relation}".strip()}
        result = _call(simulator, task, tool_name, arguments)
        if not _contains(result, hop.answer) and "open_page" in tool_names:
            # BM25 missed the page; an agent that knows the entity opens its page directly.
            tool_name, arguments = "open_page", {"title": hop.subject}
            result = _call(simulator, task, tool_name, arguments)
        if result.status != "ok":
            raise Rejected(f"tool_{result.status}")
        if not _contains(result, hop.answer):
            raise Rejected("evidence_not_found")
        turns.append(AssistantTurn(think=_think(index, hop, found), tool_call=ToolCall(tool_name, arguments)))
        turns.append(ToolTurn(result.observation))
        found.append(f"{hop.question} {hop.answer}.")
    gold = task.answers[0]
    turns.append(AssistantTurn(think=" ".join(found) + f" So the answer is {gold}.", answer=gold))
    trace = Trace(question=task.question, tools=tuple(task.tools), turns=tuple(turns))
    _check(trace, task)
    return trace


def _call(simulator: SimulatorClient, task: Task, name: str, arguments: dict) -> ToolResult:
    request = ToolCallRequest(task.id, name, json.dumps(arguments, ensure_ascii=False), task.documents)
    return simulator.call_many([request])[0]


def _contains(result: ToolResult, answer: str) -> bool:
    return result.status == "ok" and normalize_answer(answer) in normalize_answer(
        json.dumps(result.observation, ensure_ascii=False)
    )


def _think(index: int, hop: Hop, found: list[str]) -> str:
    if index == 0:
        return f"I need to find out: {hop.question}"
    return f"{found[-1]} Next I need to find out: {hop.question}"


def _check(trace: Trace, task: Task) -> None:
    try:
        parsed = parse_trace(render(trace), task.tools)
    except TraceFormatError as error:
        raise Rejected(f"format_{error.reason.value}") from None
    if exact_match(parsed.answer or "", task.answers) < 1.0:
        raise Rejected("wrong_answer")
