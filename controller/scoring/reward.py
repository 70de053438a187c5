"""Composite trace reward (design §3): answer correctness plus internal consistency, every part reported.

reward = w_answer · correctness + w_consistency · consistency, where consistency is the mean of format
validity, schema-valid tool calls, grounding, no repeated identical calls and staying within the turn
budget. A trace that does not parse gets the format penalty and nothing else, so malformed text can
never earn credit through a lucky answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mtr.answers import exact_match, f1_score, normalize_answer
from mtr.config import RewardConfig
from mtr.grammar import TraceFormatError, parse_trace
from mtr.task import Task


@dataclass(frozen=True)
class CallRecord:
    name: str
    arguments_json: str
    observation_json: str
    status: str


@dataclass(frozen=True)
class RewardBreakdown:
    reward: float
    correctness: float
    exact_match: float
    f1: float
    format_valid: float
    schema_valid_calls: float
    grounded: float
    no_repeated_calls: float
    within_budget: float
    consistency: float
    answer: str | None
    format_error: str

    def as_dict(self) -> dict:
        return asdict(self)


COMPONENTS = (
    "reward",
    "correctness",
    "exact_match",
    "f1",
    "format_valid",
    "schema_valid_calls",
    "grounded",
    "no_repeated_calls",
    "within_budget",
    "consistency",
)


def score_trace(
    text: str,
    task: Task,
    calls: Sequence[CallRecord],
    finish_reason: str,
    max_turns: int,
    config: RewardConfig,
) -> RewardBreakdown:
    try:
        trace = parse_trace(text, task.tools or None, max_turns=max_turns)
    except TraceFormatError as error:
        return _unparsable(config, f"{error.reason.value}: {error}")
    answer = trace.answer or ""
    em = exact_match(answer, task.answers)
    f1 = f1_score(answer, task.answers)
    parts = {
        "format_valid": 1.0,
        "schema_valid_calls": _fraction_ok(calls),
        "grounded": _grounded(answer, task.question, calls),
        "no_repeated_calls": _no_repeats(calls),
        "within_budget": 1.0 if finish_reason == "answer" and trace.assistant_turns <= max_turns else 0.0,
    }
    consistency = sum(parts.values()) / len(parts)
    correctness = em if config.correctness == "em" else f1
    reward = config.w_answer * correctness + config.w_consistency * consistency
    return RewardBreakdown(
        reward=reward,
        correctness=correctness,
        exact_match=em,
        f1=f1,
        consistency=consistency,
        answer=answer,
        format_error="",
        **parts,
    )


def _unparsable(config: RewardConfig, reason: str) -> RewardBreakdown:
    return RewardBreakdown(
        reward=config.format_penalty,
        correctness=0.0,
        exact_match=0.0,
        f1=0.0,
        format_valid=0.0,
        schema_valid_calls=0.0,
        grounded=0.0,
        no_repeated_calls=0.0,
        within_budget=0.0,
        consistency=0.0,
        answer=None,
        format_error=reason,
    )


def _fraction_ok(calls: Sequence[CallRecord]) -> float:
    if not calls:
        return 1.0
    return sum(call.status == "ok" for call in calls) / len(calls)


def _grounded(answer: str, question: str, calls: Sequence[CallRecord]) -> float:
    """The answer must appear in an observation or in the question (after SQuAD normalization)."""
    needle = normalize_answer(answer)
    if not needle:
        return 0.0
    haystacks = [question] + [_observation_text(call.observation_json) for call in calls if call.status == "ok"]
    return 1.0 if any(needle in normalize_answer(h) for h in haystacks) else 0.0


def _observation_text(observation_json: str) -> str:
    try:
        return json.dumps(json.loads(observation_json), ensure_ascii=False)
    except json.JSONDecodeError:
        return observation_json


def _no_repeats(calls: Sequence[CallRecord]) -> float:
    keys = [(call.name, _canonical(call.arguments_json)) for call in calls]
    return 1.0 if len(keys) == len(set(keys)) else 0.0


def _canonical(arguments_json: str) -> str:
    try:
        return json.dumps(json.loads(arguments_json), sort_keys=True)
    except json.JSONDecodeError:
        return arguments_json
