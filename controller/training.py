"""Stage 1 (SFT on AutoAgent traces) and Stage 2 (GRPO on rollout groups), driven over gRPC.

After every update that should reach the policy, the learner publishes a new weights version and the rollout
workers load it in place (controller.weightsync); the controller only passes version numbers.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from controller.advantages import group_advantages, has_signal
from controller.evaluation import score
from controller.metrics import ControllerMetrics
from controller.reward import COMPONENTS, RewardBreakdown
from controller.rolloutpool import RolloutPool
from controller.rundir import RunDirectory
from controller.sft import SFTTrainer, tokenize
from controller.weightsync import sync_weights
from mtr.config import RunConfig
from mtr.grammar import Trace
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.task import Task
from mtr.v1 import learner_service_pb2 as lpb
from mtr.v1 import rollout_service_pb2 as rpb

log = logging.getLogger("mtr.train")


def grpo_sequence(trace: rpb.Trace, advantage: float) -> lpb.TrainSequence:
    """A rollout trace as the learner takes it: ids, mask and the sampler's log-probs, plus its advantage."""
    return lpb.TrainSequence(
        token_ids=trace.token_ids, loss_mask=trace.loss_mask, old_logprobs=trace.logprobs, advantage=advantage
    )


class SFTStepper:
    """Stage 1 inside `mtr run`: SFT steps, then the final weights go to the rollout worker (checksum verified)."""

    def __init__(
        self,
        config: RunConfig,
        learner: LearnerClient,
        rollout: RolloutClient,
        model_path: str,
        run_dir: RunDirectory,
        metrics: ControllerMetrics,
    ) -> None:
        self.config, self.learner, self.rollout = config, learner, rollout
        self.model_path, self.run_dir, self.metrics = model_path, run_dir, metrics
        self.checksums_match: bool | None = None

    def run(self, examples: Sequence[tuple[Task, Trace]]) -> list[float]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        trainer = SFTTrainer(
            learner=self.learner,
            sequences=tokenize([trace for _, trace in examples], tokenizer),
            steps=self.config.sft.steps,
            batch_size=self.config.sft.batch_size,
            seed=self.config.seed,
            run_dir=self.run_dir,
            metrics=self.metrics,
        )
        losses, last = trainer.run(publish_last=True)
        if last is not None:
            self.checksums_match = sync_weights(
                last.version,
                last.publish_seconds,
                self.learner,
                self.rollout,
                self.metrics,
                self.run_dir,
                verify=True,
                method=self.config.learner.weight_sync,
            )
            log.info("SFT weights v%d on the rollout worker; checksum match: %s", last.version, self.checksums_match)
        return losses


@dataclass
class RolloutBatch:
    """One step's rollout, scored: what the learner trains on, and what gets logged."""

    step: int
    tasks: list[Task]
    response: rpb.GenerateGroupsResponse
    scored: list[tuple[rpb.Trace, RewardBreakdown]]
    trainable: list[tuple[rpb.Trace, float]]  # (trace, advantage) of groups with reward variance
    dropped_groups: int
    successes: dict[str, list[float]]  # task id -> exact match of each sample


class GRPOStepper:
    """One GRPO step in two phases, so a loop can overlap them: rollout+reward, then update+publish."""

    def __init__(
        self,
        config: RunConfig,
        learner: LearnerClient,
        rollout: RolloutClient | RolloutPool,
        run_dir: RunDirectory,
        metrics: ControllerMetrics,
        learner_version: int | None = None,
    ) -> None:
        self.config, self.learner, self.rollout = config, learner, rollout
        self.run_dir, self.metrics = run_dir, metrics
        self.learner_version = learner.status().version if learner_version is None else learner_version
        self.loaded_version = self.learner_version  # what the rollout workers run
        self._publish_seconds = 0.0

    def sampling(self, step: int) -> rpb.SamplingConfig:
        r = self.config.rollout
        return rpb.SamplingConfig(
            temperature=r.temperature,
            top_p=r.top_p,
            max_tokens_per_turn=r.max_tokens_per_turn,
            max_turns=r.max_turns,
            seed=self.config.seed * 100_003 + step,
        )

    def step(self, step: int, tasks: Sequence[Task]) -> float:
        """A synchronous step: generate with the current policy, update, load the new weights."""
        record = self.learn_phase(self.rollout_phase(step, tasks))
        self.sync_rollout()
        return record["reward"]

    # -- phase 1: rollout ---------------------------------------------------------------------------------------
    def rollout_phase(self, step: int, tasks: Sequence[Task]) -> RolloutBatch:
        """Generate the step's groups and score them. Safe to run beside `learn_phase` (it only reads config)."""
        response = self.rollout.generate_groups(tasks, self.config.rollout.group_size, self.sampling(step))
        by_id = {t.id: t for t in tasks}
        scored, trainable, dropped, successes = [], [], 0, {}
        for group in response.groups:
            task = by_id[group.task_id]
            scores = [score(tr, task, self.config.rollout.max_turns, self.config.reward) for tr in group.traces]
            scored.extend(zip(group.traces, scores, strict=True))
            successes[task.id] = [s.exact_match for s in scores]
            rewards = [s.reward for s in scores]
            if not has_signal(rewards):
                dropped += 1
                continue
            advantages = group_advantages(rewards, normalize_std=self.config.grpo.std_normalize)
            trainable += list(zip(group.traces, advantages, strict=True))
        return RolloutBatch(step, list(tasks), response, scored, trainable, dropped, successes)

    # -- phase 2: update ----------------------------------------------------------------------------------------
    def learn_phase(self, batch: RolloutBatch) -> dict:
        """Train on the batch (traces older than max_staleness versions are dropped), publish, log."""
        staleness = [self.learner_version - trace.policy_version for trace, _ in batch.trainable]
        limit = self.config.grpo.max_staleness if self.config.grpo.mode == "async" else 0
        fresh = [pair for pair, lag in zip(batch.trainable, staleness, strict=True) if lag <= limit]
        for lag in staleness:
            self.metrics.staleness.observe(lag)
        self.metrics.stale_dropped.inc(len(batch.trainable) - len(fresh))
        self.metrics.rollout_tokens.inc(batch.response.generated_tokens)
        self.metrics.rollout_sequences.inc(len(batch.scored))
        self.metrics.groups_dropped.inc(batch.dropped_groups)
        components = {name: statistics.fmean(getattr(s, name) for _, s in batch.scored) for name in COMPONENTS}
        for name, value in components.items():
            self.metrics.reward.labels(component=name).set(value)
        record = {
            "task_ids": [t.id for t in batch.tasks],
            "rollout_seconds": batch.response.seconds,
            "generated_tokens": batch.response.generated_tokens,
            "traces": len(batch.scored),
            "groups": len(batch.response.groups),
            "groups_dropped": batch.dropped_groups,
            "stale_dropped": len(batch.trainable) - len(fresh),
            "staleness_max": max(staleness, default=0),
            "policy_version": batch.response.policy_version,
            **components,
        }
        if fresh:
            update = self.learner.train_step(
                lpb.OBJECTIVE_GRPO,
                [grpo_sequence(trace, advantage) for trace, advantage in fresh],
                publish_weights=True,
                learning_rate=self.config.grpo.lr or 0.0,
                kl_coef=self.config.grpo.kl_coef,
            )
            self.learner_version = update.version
            self._publish_seconds = update.publish_seconds
            record.update(
                loss=update.loss,
                kl=update.kl,
                grad_norm=update.grad_norm,
                clip_fraction=update.clip_fraction,
                learner_seconds=update.seconds,
                version=update.version,
            )
            self.metrics.learner_step.labels(objective="grpo").observe(update.seconds)
            self.metrics.learner_loss.labels(objective="grpo").set(update.loss)
            self.metrics.kl.set(update.kl)
        self.run_dir.log("grpo", batch.step, **record)
        self.run_dir.append_jsonl("traces/grpo.jsonl", self._trace_records(batch))
        log.info(
            "grpo step %d reward %.3f EM %.3f dropped %d/%d groups (policy v%d, learner v%d)",
            batch.step,
            components["reward"],
            components["exact_match"],
            batch.dropped_groups,
            len(batch.response.groups),
            batch.response.policy_version,
            self.learner_version,
        )
        return record

    def sync_rollout(self) -> None:
        """Bring the rollout workers to the learner's latest version (waits for a generation in flight)."""
        if self.loaded_version != self.learner_version:
            sync_weights(
                self.learner_version,
                self._publish_seconds,
                self.learner,
                self.rollout,
                self.metrics,
                self.run_dir,
                method=self.config.learner.weight_sync,
            )
            self.loaded_version = self.learner_version

    @staticmethod
    def _trace_records(batch: RolloutBatch):
        for trace, breakdown in batch.scored:
            yield {
                "step": batch.step,
                "task_id": trace.task_id,
                "sample": trace.sample_index,
                "policy_version": trace.policy_version,
                "text": trace.text,
                "finish_reason": trace.finish_reason,
                **breakdown.as_dict(),
            }
