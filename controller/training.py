"""Stage 1 (SFT on AutoAgent traces) and Stage 2 (GRPO on rollout groups), driven over gRPC.

After every update that should reach the policy, the learner publishes a new weights version to the Ray
object store and the rollout worker loads it in place; the controller only passes version numbers.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections.abc import Sequence

from controller.advantages import group_advantages, has_signal
from controller.evaluation import score
from controller.metrics import ControllerMetrics
from controller.reward import COMPONENTS
from controller.rundir import RunDirectory
from controller.sft import SFTTrainer, tokenize
from mtr.config import RunConfig
from mtr.grammar import Trace
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.task import Task
from mtr.v1 import learner_service_pb2 as lpb
from mtr.v1 import rollout_service_pb2 as rpb

log = logging.getLogger("mtr.train")


def sync_weights(
    version: int,
    publish_seconds: float,
    learner: LearnerClient,
    rollout: RolloutClient,
    metrics: ControllerMetrics,
    run_dir: RunDirectory,
    verify: bool = False,
) -> bool | None:
    """Load `version` on the rollout worker; with `verify`, compare its checksum with the learner's."""
    loaded = rollout.load_weights(version, compute_checksum=verify)
    metrics.weight_sync.observe(publish_seconds + loaded.seconds)
    metrics.weight_sync_bytes.inc(loaded.bytes)
    metrics.policy_version.set(version)
    match = None
    if verify:
        match = loaded.checksum == learner.status(compute_checksum=True).checksum
    run_dir.log(
        "weight_sync",
        version,
        publish_seconds=publish_seconds,
        load_seconds=loaded.seconds,
        bytes=loaded.bytes,
        checksum_match=match,
    )
    return match


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
                last.version, last.publish_seconds, self.learner, self.rollout, self.metrics, self.run_dir, verify=True
            )
            log.info("SFT weights v%d on the rollout worker; checksum match: %s", last.version, self.checksums_match)
        return losses


class GRPOStepper:
    def __init__(
        self,
        config: RunConfig,
        learner: LearnerClient,
        rollout: RolloutClient,
        run_dir: RunDirectory,
        metrics: ControllerMetrics,
    ) -> None:
        self.config, self.learner, self.rollout = config, learner, rollout
        self.run_dir, self.metrics = run_dir, metrics

    def sampling(self, step: int) -> rpb.SamplingConfig:
        r = self.config.rollout
        return rpb.SamplingConfig(
            temperature=r.temperature,
            top_p=r.top_p,
            max_tokens_per_turn=r.max_tokens_per_turn,
            max_turns=r.max_turns,
            seed=self.config.seed * 100_003 + step,
        )

    def run(self, train: Sequence[Task], rng: random.Random) -> list[float]:
        mean_rewards = []
        for step in range(self.config.grpo.steps):
            tasks = rng.sample(list(train), min(self.config.grpo.questions_per_step, len(train)))
            mean_rewards.append(self.step(step, tasks))
        return mean_rewards

    def step(self, step: int, tasks: Sequence[Task]) -> float:
        response = self.rollout.generate_groups(tasks, self.config.rollout.group_size, self.sampling(step))
        self.metrics.rollout_tokens.inc(response.generated_tokens)
        by_id = {t.id: t for t in tasks}
        sequences, scored, dropped = [], [], 0
        for group in response.groups:
            scores = [
                score(tr, by_id[group.task_id], self.config.rollout.max_turns, self.config.reward)
                for tr in group.traces
            ]
            scored.extend(zip(group.traces, scores, strict=True))
            self.metrics.rollout_sequences.inc(len(group.traces))
            rewards = [s.reward for s in scores]
            if not has_signal(rewards):
                dropped += 1
                continue
            advantages = group_advantages(rewards)
            sequences += [grpo_sequence(t, a) for t, a in zip(group.traces, advantages, strict=True)]
        self.metrics.groups_dropped.inc(dropped)
        components = {name: statistics.fmean(getattr(s, name) for _, s in scored) for name in COMPONENTS}
        for name, value in components.items():
            self.metrics.reward.labels(component=name).set(value)
        record = {
            "rollout_seconds": response.seconds,
            "generated_tokens": response.generated_tokens,
            "groups_dropped": dropped,
            "groups": len(response.groups),
            "policy_version": response.policy_version,
            **components,
        }
        if sequences:
            update = self.learner.train_step(
                lpb.OBJECTIVE_GRPO, sequences, publish_weights=True, learning_rate=self.config.grpo.lr or 0.0
            )
            record.update(
                loss=update.loss,
                grad_norm=update.grad_norm,
                clip_fraction=update.clip_fraction,
                learner_seconds=update.seconds,
                version=update.version,
            )
            self.metrics.learner_step.labels(objective="grpo").observe(update.seconds)
            self.metrics.learner_loss.labels(objective="grpo").set(update.loss)
            sync_weights(update.version, update.publish_seconds, self.learner, self.rollout, self.metrics, self.run_dir)
        self.run_dir.log("grpo", step, **record)
        self.run_dir.append_jsonl(
            "traces/grpo.jsonl",
            (
                {
                    "step": step,
                    "task_id": t.task_id,
                    "sample": t.sample_index,
                    "policy_version": t.policy_version,
                    "text": t.text,
                    "finish_reason": t.finish_reason,
                    **s.as_dict(),
                }
                for t, s in scored
            ),
        )
        log.info(
            "grpo step %d reward %.3f EM %.3f dropped %d/%d groups",
            step,
            components["reward"],
            components["exact_match"],
            dropped,
            len(response.groups),
        )
        return components["reward"]
