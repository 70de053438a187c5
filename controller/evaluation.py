"""Evaluation through the real rollout path: greedy decoding, a turn budget, the simulator farm.

Used by `mtr run` (after each stage) and `mtr eval` (per checkpoint). Reports EM and F1 (SQuAD
normalization, best gold alias) overall and per question type and hop count, the rate of traces that
parse, the mean number of tool calls, the policy version that answered and the wall time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from controller.reward import CallRecord, RewardBreakdown, score_trace
from mtr.config import RewardConfig, RunConfig
from mtr.serviceclients import RolloutClient
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb

UNKNOWN_TYPE = "unknown"


@dataclass(frozen=True)
class QuestionScore:
    """What one greedy trace scored; the unit every aggregate is built from."""

    question_type: str
    hops: int
    exact_match: float
    f1: float
    valid: float
    tool_calls: int


@dataclass(frozen=True)
class Bucket:
    """Aggregate over a group of questions (all of a dataset, one question type, one hop count)."""

    n: int
    em: float
    f1: float
    valid: float
    tool_calls: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class EvalResult:
    """One checkpoint (`stage`: a pipeline stage or a model label) on one dataset."""

    stage: str
    dataset: str
    count: int
    exact_match: float
    f1: float
    valid_rate: float
    mean_tool_calls: float
    types: dict[str, Bucket] = field(default_factory=dict)
    hops: dict[int, Bucket] = field(default_factory=dict)
    policy_version: int = 0
    seconds: float = 0.0

    def row(self) -> dict:
        return {
            "stage": self.stage,
            "dataset": self.dataset,
            "n": self.count,
            "em": self.exact_match,
            "f1": self.f1,
            "valid": self.valid_rate,
            "tool_calls": self.mean_tool_calls,
            "version": self.policy_version,
            "seconds": self.seconds,
        }

    @property
    def by_type(self) -> dict[str, dict[str, float]]:
        """Per question type, JSON-ready (the metrics log records it as is)."""
        return {name: bucket.as_dict() for name, bucket in self.types.items()}

    @property
    def by_hops(self) -> dict[str, dict[str, float]]:
        """Per hop count, JSON-ready; keys are strings because JSON object keys are."""
        return {str(hops): bucket.as_dict() for hops, bucket in self.hops.items()}


def greedy_sampling(config: RunConfig, seed: int) -> rpb.SamplingConfig:
    return rpb.SamplingConfig(
        temperature=0.0,
        top_p=1.0,
        max_tokens_per_turn=config.rollout.max_tokens_per_turn,
        max_turns=config.rollout.max_turns,
        seed=seed,
    )


def call_records(trace: rpb.Trace) -> list[CallRecord]:
    return [CallRecord(c.name, c.arguments_json, c.observation_json, c.status) for c in trace.tool_calls]


def score(trace: rpb.Trace, task: Task, max_turns: int, reward: RewardConfig) -> RewardBreakdown:
    return score_trace(trace.text, task, call_records(trace), trace.finish_reason, max_turns, reward)


def bucket(scores: Sequence[QuestionScore]) -> Bucket:
    return Bucket(
        n=len(scores),
        em=_mean(s.exact_match for s in scores),
        f1=_mean(s.f1 for s in scores),
        valid=_mean(s.valid for s in scores),
        tool_calls=_mean(s.tool_calls for s in scores),
    )


def summarize(
    stage: str, dataset: str, scores: Sequence[QuestionScore], policy_version: int = 0, seconds: float = 0.0
) -> EvalResult:
    """Aggregate per-question scores into one result with its per-type and per-hop-count breakdowns."""
    overall = bucket(scores)
    return EvalResult(
        stage=stage,
        dataset=dataset,
        count=overall.n,
        exact_match=overall.em,
        f1=overall.f1,
        valid_rate=overall.valid,
        mean_tool_calls=overall.tool_calls,
        types=_grouped(scores, lambda s: s.question_type or UNKNOWN_TYPE),
        hops=_grouped(scores, lambda s: s.hops),
        policy_version=policy_version,
        seconds=seconds,
    )


def evaluate(
    stage: str, dataset: str, tasks: Sequence[Task], rollout: RolloutClient, config: RunConfig
) -> tuple[EvalResult, list[dict]]:
    """Greedy traces for `tasks` on the rollout worker, scored; returns the result and one record per question."""
    start = time.perf_counter()
    response = rollout.generate_groups(tasks, 1, greedy_sampling(config, config.seed))
    by_id = {task.id: task for task in tasks}
    scores, records = [], []
    for group in response.groups:
        task = by_id[group.task_id]
        trace = group.traces[0]
        breakdown = score(trace, task, config.rollout.max_turns, config.reward)
        scores.append(question_score(task, breakdown, len(trace.tool_calls)))
        records.append(_record(stage, dataset, task, trace, breakdown))
    missing = set(by_id) - {g.task_id for g in response.groups}
    if missing:
        raise RuntimeError(
            f"rollout worker at {rollout.address} returned no trace for {len(missing)} task(s) of "
            f"{dataset}, e.g. {sorted(missing)[:3]}"
        )
    result = summarize(stage, dataset, scores, response.policy_version, time.perf_counter() - start)
    return result, records


def question_score(task: Task, breakdown: RewardBreakdown, tool_calls: int) -> QuestionScore:
    return QuestionScore(
        question_type=task.question_type,
        hops=task.hops,
        exact_match=breakdown.exact_match,
        f1=breakdown.f1,
        valid=breakdown.format_valid,
        tool_calls=tool_calls,
    )


def _record(stage: str, dataset: str, task: Task, trace: rpb.Trace, breakdown: RewardBreakdown) -> dict:
    return {
        "stage": stage,
        "dataset": dataset,
        "task_id": task.id,
        "question": task.question,
        "question_type": task.question_type,
        "hops": task.hops,
        "gold": list(task.answers),
        "text": trace.text,
        "finish_reason": trace.finish_reason,
        "tool_calls": len(trace.tool_calls),
        **breakdown.as_dict(),
    }


def _grouped(scores: Iterable[QuestionScore], key: Callable[[QuestionScore], Hashable]) -> dict:
    groups: dict = defaultdict(list)
    for s in scores:
        groups[key(s)].append(s)
    return {k: bucket(v) for k, v in sorted(groups.items())}


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
