"""The AutoAgent's offline oracle teacher: complete think → act → observe traces from gold evidence.

Works from whatever evidence a dataset carries: the embedded world's and MuSiQue's decompositions
(question + answer per hop), 2WikiMultiHopQA's evidence triples (subject, relation, object) and HotpotQA's
supporting-fact titles (pages, no intermediate answers). Each hop becomes a `search` call (or `open_page`
when search misses) through the real simulator; the observation it gets back is what goes into the trace.

Rejection sampling keeps only traces that render and parse, whose every call was schema-valid and
answered, whose observations hold each hop's evidence (its answer, or for title-only hops the page
itself), whose final answer appears in the evidence (except yes/no), and whose answer matches gold. Why
a trace was rejected is counted, so a broken tool or corpus shows up as a reason, not a silent drop.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtr.answers import exact_match, normalize_answer
from mtr.grammar import AssistantTurn, ToolCall, ToolTurn, Trace, TraceFormatError, parse_trace, render
from mtr.simclient import SimulatorClient, ToolCallRequest, ToolResult
from mtr.task import Hop, Task

_YES_NO = {"yes", "no"}
_PLACEHOLDER = re.compile(r"#(\d+)")


@dataclass
class SynthesisReport:
    accepted: list[tuple[Task, Trace]] = field(default_factory=list)
    attempted: int = 0
    rejected: Counter = field(default_factory=Counter)
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (dataset, "accepted" or the reason)

    def by_source(self) -> dict[str, dict]:
        """Attempted, accepted, rate and rejection reasons per dataset the questions came from."""
        table: dict[str, dict] = {}
        for source, outcome in self.decisions:
            row = table.setdefault(source, {"attempted": 0, "accepted": 0, "rejected": Counter()})
            row["attempted"] += 1
            if outcome == "accepted":
                row["accepted"] += 1
            else:
                row["rejected"][outcome] += 1
        for row in table.values():
            row["acceptance_rate"] = row["accepted"] / row["attempted"]
            row["rejected"] = dict(row["rejected"])
        return table

    @property
    def acceptance_rate(self) -> float:
        return len(self.accepted) / self.attempted if self.attempted else 0.0


class Rejected(Exception):
    """A teacher's trace failed a check; `reason` is the counted label (e.g. "evidence_not_found")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OracleTeacher:
    """Needs no model: the gold evidence says what to look up and what the answer is."""

    name = "oracle"

    def trace(self, task: Task, simulator: SimulatorClient) -> Trace:
        return oracle_trace(task, simulator)


def synthesize(tasks: Sequence[Task], simulator: SimulatorClient, teacher=None) -> SynthesisReport:
    teacher = teacher or OracleTeacher()
    report = SynthesisReport()
    for task in tasks:
        report.attempted += 1
        source = task.source or "unknown"
        try:
            report.accepted.append((task, teacher.trace(task, simulator)))
            report.decisions.append((source, "accepted"))
        except Rejected as rejection:
            report.rejected[rejection.reason] += 1
            report.decisions.append((source, rejection.reason))
    return report


def oracle_trace(task: Task, simulator: SimulatorClient) -> Trace:
    if not task.decomposition:
        raise Rejected("no_decomposition")
    tool_names = {tool["function"]["name"] for tool in task.tools}
    if "search" not in tool_names:
        raise Rejected("no_search_tool")
    turns: list[AssistantTurn | ToolTurn] = []
    found: list[str] = []
    answers: list[str] = []
    evidence: list[ToolResult] = []
    for index, hop in enumerate(task.decomposition):
        want = hop_question(hop, answers)
        result, call = _look_up(task, hop, simulator, tool_names)
        turns.append(AssistantTurn(think=_think(index, want, found), tool_call=call))
        turns.append(ToolTurn(result.observation))
        evidence.append(result)
        answers.append(hop.answer)
        found.append(f"{want}: {hop.answer}." if hop.answer else f"The page on {hop.subject} is relevant.")
    gold = task.answers[0]
    if normalize_answer(gold) not in _YES_NO and not any(_contains(r, gold) for r in evidence):
        raise Rejected("answer_not_in_evidence")
    turns.append(AssistantTurn(think=" ".join(found) + f" So the answer is {gold}.", answer=gold))
    trace = Trace(question=task.question, tools=tuple(task.tools), turns=tuple(turns))
    check_trace(trace, task)
    return trace


def hop_question(hop: Hop, earlier_answers: Sequence[str]) -> str:
    """What the hop asks, in words: MuSiQue's "#1 >> capital" becomes "the capital of Mountrail County"."""
    question = _PLACEHOLDER.sub(lambda m: _earlier(earlier_answers, int(m.group(1))), hop.question).strip()
    if ">>" in question:
        subject, _, relation = question.partition(">>")
        return f"the {relation.strip()} of {subject.strip()}"
    if question:
        return question
    if hop.relation:
        return f"the {hop.relation.replace('_', ' ')} of {hop.subject}"
    return f"what the page on {hop.subject} says"


def _earlier(answers: Sequence[str], number: int) -> str:
    return answers[number - 1] if 0 < number <= len(answers) else f"#{number}"


def _look_up(task: Task, hop: Hop, simulator: SimulatorClient, tool_names: set[str]) -> tuple[ToolResult, ToolCall]:
    """Search first; an agent that knows the entity opens its page directly when BM25 misses it."""
    relation = hop.relation.replace("_", " ") if hop.relation and ">>" not in hop.question else hop.relation
    call = ToolCall("search", {"query": f"{hop.subject} {relation}".strip()})
    result = _call(simulator, task, call)
    if not _has_evidence(result, hop) and "open_page" in tool_names and hop.subject:
        call = ToolCall("open_page", {"title": hop.subject})
        result = _call(simulator, task, call)
    if result.status != "ok":
        raise Rejected(f"tool_{result.status}")
    if not _has_evidence(result, hop):
        raise Rejected("evidence_not_found")
    return result, call


def _has_evidence(result: ToolResult, hop: Hop) -> bool:
    """A hop with an answer needs that answer in the observation; a title-only hop needs its page there."""
    if hop.answer:
        return _contains(result, hop.answer)
    return _contains(result, hop.subject)


def _call(simulator: SimulatorClient, task: Task, call: ToolCall) -> ToolResult:
    request = ToolCallRequest(task.id, call.name, json.dumps(call.arguments, ensure_ascii=False), task.documents)
    return simulator.call_many([request])[0]


def _contains(result: ToolResult, text: str) -> bool:
    needle = normalize_answer(text)
    return (
        result.status == "ok"
        and bool(needle)
        and needle in normalize_answer(json.dumps(result.observation, ensure_ascii=False))
    )


def _think(index: int, want: str, found: list[str]) -> str:
    if index == 0:
        return f"I need to find out {want}."
    return f"{found[-1]} Next I need to find out {want}."


def check_trace(trace: Trace, task: Task) -> None:
    """The acceptance checks every teacher's trace must pass: it parses (calls valid) and answers gold."""
    try:
        parsed = parse_trace(render(trace), task.tools)
    except TraceFormatError as error:
        raise Rejected(f"format_{error.reason.value}") from None
    if exact_match(parsed.answer or "", task.answers) < 1.0:
        raise Rejected("wrong_answer")
