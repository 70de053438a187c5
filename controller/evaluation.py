"""Evaluation through the real rollout path: greedy decoding, a turn budget, the simulator farm.

Reports EM and F1 (SQuAD normalization) overall and per question type and hop count, the rate of traces
that parse, and the mean number of tool calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.reward import CallRecord, RewardBreakdown, score_trace
from mtr.config import RewardConfig, RunConfig
from mtr.serviceclients import RolloutClient
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb


@dataclass
class EvalResult:
    stage: str
    dataset: str
    count: int
    exact_match: float
    f1: float
    valid_rate: float
    mean_tool_calls: float
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)
    policy_version: int = 0

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
        }


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


def evaluate(
    stage: str, dataset: str, tasks: Sequence[Task], rollout: RolloutClient, config: RunConfig
) -> tuple[EvalResult, list[dict]]:
    response = rollout.generate_groups(tasks, 1, greedy_sampling(config, config.seed))
    by_id = {task.id: task for task in tasks}
    records = []
    buckets: dict[str, list[RewardBreakdown]] = defaultdict(list)
    for group in response.groups:
        task = by_id[group.task_id]
        trace = group.traces[0]
        breakdown = score(trace, task, config.rollout.max_turns, config.reward)
        buckets[f"type={task.question_type}"].append(breakdown)
        buckets[f"hops={task.hops}"].append(breakdown)
        buckets["all"].append(breakdown)
        records.append(
            {
                "stage": stage,
                "task_id": task.id,
                "question": task.question,
                "gold": list(task.answers),
                "text": trace.text,
                "finish_reason": trace.finish_reason,
                **breakdown.as_dict(),
            }
        )
    overall = buckets.pop("all")
    result = EvalResult(
        stage=stage,
        dataset=dataset,
        count=len(overall),
        exact_match=_mean(b.exact_match for b in overall),
        f1=_mean(b.f1 for b in overall),
        valid_rate=_mean(b.format_valid for b in overall),
        mean_tool_calls=_mean(len(g.traces[0].tool_calls) for g in response.groups),
        by_type={
            k: {"n": len(v), "em": _mean(b.exact_match for b in v), "f1": _mean(b.f1 for b in v)}
            for k, v in sorted(buckets.items())
        },
        policy_version=response.policy_version,
    )
    return result, records


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
