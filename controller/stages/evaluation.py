"""Evaluation through the real rollout path: greedy decoding, a turn budget, the simulator farm.

Used by `mtr run` (after each stage) and `mtr eval` (per checkpoint). Reports EM and F1 (SQuAD
normalization, best gold alias) overall and per question type and hop count, every EM with its 95 %
bootstrap interval, the rate of traces that parse, the mean number of tool calls, the policy version that
answered and the wall time. `evaluate_pass_at_k` samples n traces per question at the rollout temperature
and reports the unbiased pass@k (the headroom GRPO can turn into greedy EM). Each is one `generate_groups`
call for all questions of a dataset, so the rollout worker batches them continuously.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from controller.scoring.intervals import RESAMPLES, SEED, Interval, bootstrap_mean, pass_at_k_interval
from controller.scoring.reward import CallRecord, RewardBreakdown, score_trace
from mtr.config import RewardConfig, RunConfig
from mtr.serviceclients import RolloutClient
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb

log = logging.getLogger("mtr.eval")

UNKNOWN_TYPE = "unknown"
PASS_KS = (1, 4, 8)


@dataclass(frozen=True)
class QuestionScore:
    """What one greedy trace scored; the unit every aggregate is built from."""

    question_type: str
    hops: int
    exact_match: float
    f1: float
    valid: float
    tool_calls: int
    task_id: str = ""  # pairs a question across checkpoints (stage-to-stage gains)


@dataclass(frozen=True)
class Bucket:
    """Aggregate over a group of questions (all of a dataset, one question type, one hop count)."""

    n: int
    em: float
    f1: float
    valid: float
    tool_calls: float
    em_low: float = 0.0  # 95 % bootstrap interval of `em`
    em_high: float = 0.0

    def as_dict(self) -> dict:
        values = asdict(self)
        values["em_ci"] = [values.pop("em_low"), values.pop("em_high")]
        return values


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
    em_low: float = 0.0  # 95 % bootstrap interval of `exact_match` over the questions
    em_high: float = 0.0
    question_em: dict[str, float] = field(default_factory=dict)  # task id -> EM, to pair with other checkpoints

    def row(self) -> dict:
        return {
            "stage": self.stage,
            "dataset": self.dataset,
            "n": self.count,
            "em": self.exact_match,
            "em_ci": [self.em_low, self.em_high],
            "f1": self.f1,
            "valid": self.valid_rate,
            "tool_calls": self.mean_tool_calls,
            "version": self.policy_version,
            "seconds": self.seconds,
        }

    @property
    def by_type(self) -> dict[str, dict]:
        """Per question type, JSON-ready (the metrics log records it as is)."""
        return {name: bucket.as_dict() for name, bucket in self.types.items()}

    @property
    def by_hops(self) -> dict[str, dict]:
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


def pass_sampling(config: RunConfig, seed: int) -> rpb.SamplingConfig:
    """The GRPO sampler's settings (rollout.temperature, top_p): pass@k measures what GRPO's groups can find."""
    r = config.rollout
    return rpb.SamplingConfig(
        temperature=r.temperature,
        top_p=r.top_p,
        max_tokens_per_turn=r.max_tokens_per_turn,
        max_turns=r.max_turns,
        seed=seed,
    )


def call_records(trace: rpb.Trace) -> list[CallRecord]:
    return [CallRecord(c.name, c.arguments_json, c.observation_json, c.status) for c in trace.tool_calls]


def score(trace: rpb.Trace, task: Task, max_turns: int, reward: RewardConfig) -> RewardBreakdown:
    return score_trace(trace.text, task, call_records(trace), trace.finish_reason, max_turns, reward)


def bucket(scores: Sequence[QuestionScore], resamples: int = RESAMPLES, seed: int = SEED) -> Bucket:
    em = bootstrap_mean([s.exact_match for s in scores], resamples, seed)
    return Bucket(
        n=len(scores),
        em=em.estimate,
        f1=_mean(s.f1 for s in scores),
        valid=_mean(s.valid for s in scores),
        tool_calls=_mean(s.tool_calls for s in scores),
        em_low=em.low,
        em_high=em.high,
    )


def summarize(
    stage: str,
    dataset: str,
    scores: Sequence[QuestionScore],
    policy_version: int = 0,
    seconds: float = 0.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> EvalResult:
    """Aggregate per-question scores into one result with its per-type and per-hop-count breakdowns."""
    overall = bucket(scores, resamples, seed)
    return EvalResult(
        stage=stage,
        dataset=dataset,
        count=overall.n,
        exact_match=overall.em,
        f1=overall.f1,
        valid_rate=overall.valid,
        mean_tool_calls=overall.tool_calls,
        types=_grouped(scores, lambda s: s.question_type or UNKNOWN_TYPE, resamples, seed),
        hops=_grouped(scores, lambda s: s.hops, resamples, seed),
        policy_version=policy_version,
        seconds=seconds,
        em_low=overall.em_low,
        em_high=overall.em_high,
        question_em={s.task_id: s.exact_match for s in scores},
    )


def evaluate(
    stage: str, dataset: str, tasks: Sequence[Task], rollout: RolloutClient, config: RunConfig
) -> tuple[EvalResult, list[dict]]:
    """Greedy traces for `tasks` on the rollout worker, scored; returns the result and one record per question."""
    log.info("eval %s on %s: %d questions, greedy, in one batch", stage, dataset, len(tasks))
    start = time.perf_counter()
    response = rollout.generate_groups(tasks, 1, greedy_sampling(config, config.seed))
    by_id = _check_groups(response, tasks, 1, dataset, rollout)
    scores, records = [], []
    for group in response.groups:
        task = by_id[group.task_id]
        trace = group.traces[0]
        breakdown = score(trace, task, config.rollout.max_turns, config.reward)
        scores.append(question_score(task, breakdown, len(trace.tool_calls)))
        records.append(_record(stage, dataset, task, trace, breakdown))
    seconds = time.perf_counter() - start
    for record in records:  # so that `mtr eval --resume` can report them without re-running
        record.update(policy_version=response.policy_version, seconds=round(seconds, 3))
    boot = config.eval
    result = summarize(
        stage, dataset, scores, response.policy_version, seconds, boot.bootstrap_resamples, boot.bootstrap_seed
    )
    log.info(
        "eval %s on %s: EM %.3f [%.3f, %.3f] F1 %.3f valid %.2f tool calls %.2f (%d questions, %.1fs)",
        stage,
        dataset,
        result.exact_match,
        result.em_low,
        result.em_high,
        result.f1,
        result.valid_rate,
        result.mean_tool_calls,
        result.count,
        seconds,
    )
    return result, records


@dataclass
class PassAtK:
    """pass@k of one checkpoint on one dataset from `samples` sampled traces per question."""

    stage: str
    dataset: str
    count: int  # questions
    samples: int  # traces per question
    values: dict[int, Interval]  # k -> pass@k over questions with its 95 % bootstrap interval
    correct: dict[str, int] = field(default_factory=dict)  # task id -> traces with exact match
    temperature: float = 1.0
    seconds: float = 0.0

    def row(self) -> dict:
        return {
            "stage": self.stage,
            "dataset": self.dataset,
            "n": self.count,
            "samples": self.samples,
            "temperature": self.temperature,
            **{f"pass@{k}": v.estimate for k, v in self.values.items()},
            **{f"pass@{k}_ci": v.bounds for k, v in self.values.items()},
            "seconds": self.seconds,
        }


def pass_ks(samples: int) -> list[int]:
    """The k of (1, 4, 8) that `samples` traces per question can estimate."""
    return [k for k in PASS_KS if k <= samples]


def evaluate_pass_at_k(
    stage: str, dataset: str, tasks: Sequence[Task], rollout: RolloutClient, config: RunConfig, samples: int
) -> tuple[PassAtK, list[dict]]:
    """`samples` traces per question at the rollout temperature, scored; pass@k and one record per trace."""
    log.info("pass@k %s on %s: %d questions x %d samples, in one batch", stage, dataset, len(tasks), samples)
    start = time.perf_counter()
    response = rollout.generate_groups(tasks, samples, pass_sampling(config, config.seed))
    by_id = _check_groups(response, tasks, samples, dataset, rollout)
    correct: dict[str, int] = {}
    records = []
    for group in response.groups:
        task = by_id[group.task_id]
        correct[task.id] = 0
        for index, trace in enumerate(group.traces):
            breakdown = score(trace, task, config.rollout.max_turns, config.reward)
            correct[task.id] += int(breakdown.exact_match >= 1.0)
            records.append({**_record(stage, dataset, task, trace, breakdown), "sample": index})
    result = pass_at_k_result(stage, dataset, correct, samples, config, time.perf_counter() - start)
    for record in records:
        record["seconds"] = round(result.seconds, 3)
    shown = " ".join(f"pass@{k} {v.estimate:.3f} [{v.low:.3f}, {v.high:.3f}]" for k, v in result.values.items())
    log.info("pass@k %s on %s: %s (%d questions, %.1fs)", stage, dataset, shown, result.count, result.seconds)
    return result, records


def pass_at_k_result(
    stage: str, dataset: str, correct: dict[str, int], samples: int, config: RunConfig, seconds: float
) -> PassAtK:
    """pass@k with its intervals from the number of correct traces per question."""
    boot = config.eval
    counts = list(correct.values())
    values = {
        k: pass_at_k_interval(samples, counts, k, boot.bootstrap_resamples, boot.bootstrap_seed)
        for k in pass_ks(samples)
    }
    return PassAtK(stage, dataset, len(counts), samples, values, correct, config.rollout.temperature, seconds)


def restore(
    stage: str, dataset: str, tasks: Sequence[Task], records: Sequence[dict], config: RunConfig
) -> EvalResult | None:
    """The result a finished greedy evaluation wrote (one record per question), or None if it does not cover
    exactly `tasks` for `stage`: `mtr eval --resume` re-reads what it measured instead of measuring again."""
    by_id = {task.id: task for task in tasks}
    rows = [r for r in records if r.get("stage") == stage and r.get("task_id") in by_id]
    if len(rows) != len(records) or sorted(r["task_id"] for r in rows) != sorted(by_id):
        return None
    scores = [
        QuestionScore(
            question_type=by_id[r["task_id"]].question_type,
            hops=by_id[r["task_id"]].hops,
            exact_match=float(r["exact_match"]),
            f1=float(r["f1"]),
            valid=float(r["format_valid"]),
            tool_calls=int(r["tool_calls"]),
            task_id=r["task_id"],
        )
        for r in rows
    ]
    boot = config.eval
    version, seconds = int(rows[0].get("policy_version", 0)), float(rows[0].get("seconds", 0.0))
    return summarize(stage, dataset, scores, version, seconds, boot.bootstrap_resamples, boot.bootstrap_seed)


def restore_pass_at_k(
    stage: str, dataset: str, tasks: Sequence[Task], records: Sequence[dict], samples: int, config: RunConfig
) -> PassAtK | None:
    """pass@k from a finished sampled evaluation's records (`samples` per question), or None if incomplete."""
    by_id = {task.id: task for task in tasks}
    correct: dict[str, int] = {task_id: 0 for task_id in by_id}
    seen: dict[str, int] = {task_id: 0 for task_id in by_id}
    for r in records:
        if r.get("stage") != stage or r.get("task_id") not in by_id:
            return None
        seen[r["task_id"]] += 1
        correct[r["task_id"]] += int(float(r["exact_match"]) >= 1.0)
    if any(count != samples for count in seen.values()):
        return None
    return pass_at_k_result(stage, dataset, correct, samples, config, float(records[0].get("seconds", 0.0)))


def _check_groups(
    response: rpb.GenerateGroupsResponse, tasks: Sequence[Task], samples: int, dataset: str, rollout: RolloutClient
) -> dict[str, Task]:
    """Tasks by id, once every task came back with `samples` traces; otherwise the error names what is missing."""
    by_id = {task.id: task for task in tasks}
    missing = set(by_id) - {g.task_id for g in response.groups}
    if missing:
        raise RuntimeError(
            f"rollout worker at {rollout.address} returned no trace for {len(missing)} task(s) of "
            f"{dataset}, e.g. {sorted(missing)[:3]}"
        )
    short = [g.task_id for g in response.groups if len(g.traces) != samples]
    if short:
        raise RuntimeError(
            f"rollout worker at {rollout.address} returned other than {samples} trace(s) for {len(short)} task(s) "
            f"of {dataset}, e.g. {short[:3]}"
        )
    return by_id


def question_score(task: Task, breakdown: RewardBreakdown, tool_calls: int) -> QuestionScore:
    return QuestionScore(
        question_type=task.question_type,
        hops=task.hops,
        exact_match=breakdown.exact_match,
        f1=breakdown.f1,
        valid=breakdown.format_valid,
        tool_calls=tool_calls,
        task_id=task.id,
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


def _grouped(
    scores: Iterable[QuestionScore], key: Callable[[QuestionScore], Hashable], resamples: int, seed: int
) -> dict:
    groups: dict = defaultdict(list)
    for s in scores:
        groups[key(s)].append(s)
    return {k: bucket(v, resamples, seed) for k, v in sorted(groups.items())}


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
