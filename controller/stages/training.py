"""Stage 1 (SFT on AutoAgent traces) and Stage 2 (GRPO on rollout groups), driven over gRPC.

After every update that should reach the policy, the learner publishes a new weights version and the rollout
workers load it in place (controller.cluster.weightsync); the controller only passes version numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.cluster.rolloutpool import RolloutPool
from controller.cluster.weightsync import sync_weights
from controller.reports.metrics import ControllerMetrics
from controller.reports.rundir import RunDirectory
from controller.scoring.advantages import group_advantages, has_signal, is_truncated
from controller.scoring.reward import COMPONENTS, RewardBreakdown
from controller.stages.evaluation import score
from controller.stages.sft import SFTTrainer, tokenize
from mtr.config import RunConfig
from mtr.grammar import Trace
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.task import Task
from mtr.v1 import learner_service_pb2 as lpb
from mtr.v1 import rollout_service_pb2 as rpb

log = logging.getLogger("mtr.train")

# grpo.loss_agg_mode -> the TrainStep request's enum.
LOSS_AGGREGATION = {
    "token-mean": lpb.LOSS_AGGREGATION_TOKEN_MEAN,
    "seq-mean-token-mean": lpb.LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN,
    "seq-mean-token-sum": lpb.LOSS_AGGREGATION_SEQ_MEAN_TOKEN_SUM,
}

# refill(draw, count, used_ids) -> up to `count` new questions for dynamic-sampling draw `draw` (1, 2, ...) of a
# step, none of `used_ids` (the step's questions so far).
RefillFn = Callable[[int, int, set[str]], list[Task]]


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
    """One step's rollout, scored: what the learner trains on, and what gets logged.

    With dynamic sampling a step may take several draws; `tasks`, `response` (groups, tokens, seconds) and the
    counts cover all of them.
    """

    step: int
    tasks: list[Task]  # every question drawn this step
    response: rpb.GenerateGroupsResponse
    scored: list[tuple[rpb.Trace, RewardBreakdown]]
    trainable: list[tuple[rpb.Trace, float]]  # (trace, advantage) of groups with signal
    dropped_groups: int  # groups without signal (reward std below grpo.min_reward_std)
    successes: dict[str, list[float]]  # task id -> exact match of each sample
    draws: int = 1  # rollout batches generated for this step (dynamic sampling)
    truncated: int = 0  # traces cut by the token or turn budget
    truncated_masked: int = 0  # of those, left out of the loss (grpo.truncated: mask)
    kept_ids: list[str] = field(default_factory=list)  # task ids of the groups kept
    refill_ids: list[str] = field(default_factory=list)  # task ids drawn by dynamic-sampling refills
    noise_share: float | None = None  # share of noisy tool observations (model ToolActor), None: not scheduled

    @property
    def kept_groups(self) -> int:
        return len(self.kept_ids)

    def absorb(self, other: RolloutBatch) -> None:
        """Add a later draw of the same step."""
        merged = rpb.GenerateGroupsResponse(
            groups=[*self.response.groups, *other.response.groups],
            policy_version=self.response.policy_version,
            generated_tokens=self.response.generated_tokens + other.response.generated_tokens,
            seconds=self.response.seconds + other.response.seconds,
        )
        self.tasks += other.tasks
        self.response = merged
        self.scored += other.scored
        self.trainable += other.trainable
        self.dropped_groups += other.dropped_groups
        self.successes.update(other.successes)
        self.draws += other.draws
        self.truncated += other.truncated
        self.truncated_masked += other.truncated_masked
        self.kept_ids += other.kept_ids


def noise_setter(config: RunConfig, simulator) -> Callable[[float], None] | None:
    """The farm's SetNoise when its actor has a noisy mode (simulator.actor 'model'), else None."""
    return simulator.set_noise if config.simulator.actor == "model" and simulator is not None else None


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
        set_noise: Callable[[float], None] | None = None,
    ) -> None:
        """`set_noise`: tells the simulator farm the noisy share of simulator.noise for each step (a model actor)."""
        self.config, self.learner, self.rollout = config, learner, rollout
        self.set_noise = set_noise
        self.run_dir, self.metrics = run_dir, metrics
        self.learner_version = learner.status().version if learner_version is None else learner_version
        self.loaded_version = self.learner_version  # what the rollout workers run
        self._publish_seconds = 0.0
        if isinstance(rollout, RolloutPool):
            rollout.on_lost = self._worker_lost
        # The next update starts from fresh optimizer moments (once per Stage 2; saved with a GRPO checkpoint).
        self.reset_optimizer_pending = config.grpo.reset_optimizer

    def _worker_lost(self, address: str, reason: str) -> None:
        self.metrics.rollout_workers_lost.inc()
        self.run_dir.log("rollout_worker_lost", self.learner_version, address=address, reason=reason)

    def sampling(self, step: int, draw: int = 0) -> rpb.SamplingConfig:
        r = self.config.rollout
        return rpb.SamplingConfig(
            temperature=r.temperature,
            top_p=r.top_p,
            max_tokens_per_turn=r.max_tokens_per_turn,
            max_turns=r.max_turns,
            seed=self.config.seed * 100_003 + step + 1_000_033 * draw,
        )

    def step(self, step: int, tasks: Sequence[Task]) -> float:
        """A synchronous step: generate with the current policy, update, load the new weights."""
        record = self.learn_phase(self.rollout_phase(step, tasks))
        self.sync_rollout()
        return record["reward"]

    # -- phase 1: rollout ---------------------------------------------------------------------------------------
    def rollout_phase(self, step: int, tasks: Sequence[Task], refill: RefillFn | None = None) -> RolloutBatch:
        """Generate the step's groups and score them. Safe to run beside `learn_phase` (it only reads config).

        Dynamic sampling (`grpo.dynamic_sampling`, with a `refill`): while fewer groups than questions asked
        for have signal, ask `refill` for that many new questions and generate them (draw k samples with its
        own seed), at most `grpo.max_draws_per_step` draws in all; the step trains on what was kept.
        """
        g = self.config.grpo
        share = None
        if self.set_noise is not None:
            share = self.config.simulator.noise.share(step, g.steps)
            self.set_noise(share)
        batch = self._draw(step, 0, tasks)
        batch.noise_share = share
        wanted = len(tasks)
        while (
            refill is not None
            and g.dynamic_sampling
            and batch.kept_groups < wanted
            and batch.draws < g.max_draws_per_step
        ):
            more = refill(batch.draws, wanted - batch.kept_groups, {t.id for t in batch.tasks})
            if not more:
                break
            batch.absorb(self._draw(step, batch.draws, more))
            batch.refill_ids += [t.id for t in more]
        return batch

    def _draw(self, step: int, draw: int, tasks: Sequence[Task]) -> RolloutBatch:
        """One rollout batch of a step: generate, score (grpo.truncated applied), advantages of groups with signal."""
        g = self.config.grpo
        response = self.rollout.generate_groups(tasks, self.config.rollout.group_size, self.sampling(step, draw))
        by_id = {t.id: t for t in tasks}
        batch = RolloutBatch(step, list(tasks), response, [], [], 0, {})
        for group in response.groups:
            task = by_id[group.task_id]
            scores = [self._score(tr, task) for tr in group.traces]
            batch.scored.extend(zip(group.traces, scores, strict=True))
            batch.successes[task.id] = [s.exact_match for s in scores]
            truncated = [is_truncated(tr.finish_reason) for tr in group.traces]
            batch.truncated += sum(truncated)
            rewards = [s.reward for s in scores]
            if not has_signal(rewards, min_std=g.min_reward_std):
                batch.dropped_groups += 1
                continue
            batch.kept_ids.append(task.id)
            advantages = group_advantages(rewards, normalize_std=g.std_normalize)
            for trace, advantage, cut in zip(group.traces, advantages, truncated, strict=True):
                if cut and g.truncated == "mask":  # in the group's baseline, but no loss on it
                    batch.truncated_masked += 1
                else:
                    batch.trainable.append((trace, advantage))
        return batch

    def _score(self, trace: rpb.Trace, task: Task) -> RewardBreakdown:
        breakdown = score(trace, task, self.config.rollout.max_turns, self.config.reward)
        if self.config.grpo.truncated == "penalize" and is_truncated(trace.finish_reason):
            return dataclasses.replace(breakdown, reward=self.config.reward.format_penalty)
        return breakdown

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
        self.metrics.groups_drawn.inc(len(batch.response.groups))
        self.metrics.groups_kept.inc(batch.kept_groups)
        components = {name: statistics.fmean(getattr(s, name) for _, s in batch.scored) for name in COMPONENTS}
        for name, value in components.items():
            self.metrics.reward.labels(component=name).set(value)
        record = {
            # The step's questions as drawn up front, then the refills (which depend on the rollout's rewards: in
            # async mode the first step after a resume regenerates on newer weights, so its refills may differ).
            "task_ids": [t.id for t in batch.tasks if t.id not in set(batch.refill_ids)],
            "refill_task_ids": batch.refill_ids,
            "rollout_seconds": batch.response.seconds,
            "generated_tokens": batch.response.generated_tokens,
            "traces": len(batch.scored),
            "groups": len(batch.response.groups),
            "groups_drawn": len(batch.response.groups),
            "groups_kept": batch.kept_groups,
            **({} if batch.noise_share is None else {"noise_share": batch.noise_share}),
            "groups_dropped": batch.dropped_groups,
            "draws": batch.draws,
            "truncated": batch.truncated,
            "truncated_masked": batch.truncated_masked,
            "stale_dropped": len(batch.trainable) - len(fresh),
            "staleness_max": max(staleness, default=0),
            "policy_version": batch.response.policy_version,
            **self._pool_record(),
            **components,
        }
        if fresh:
            g = self.config.grpo
            reset = self.reset_optimizer_pending
            update = self.learner.train_step(
                lpb.OBJECTIVE_GRPO,
                [grpo_sequence(trace, advantage) for trace, advantage in fresh],
                publish_weights=True,
                learning_rate=g.lr or 0.0,
                kl_coef=g.kl_coef,
                clip_ratio_low=g.clip_ratio_low or 0.0,
                clip_ratio_high=g.clip_ratio_high or 0.0,
                loss_aggregation=LOSS_AGGREGATION[g.loss_agg_mode],
                reset_optimizer=reset,
            )
            self.reset_optimizer_pending = False
            self.learner_version = update.version
            self._publish_seconds = update.publish_seconds
            changed = update.weights_changed / update.weights_total if update.weights_total else 0.0
            record.update(
                loss=update.loss,
                kl=update.kl,
                grad_norm=update.grad_norm,
                clip_fraction=update.clip_fraction,
                learner_seconds=update.seconds,
                learning_rate=update.learning_rate,
                version=update.version,
                optimizer_reset=reset,
                weights_changed=update.weights_changed,
                weights_changed_fraction=changed,
            )
            self.metrics.weights_changed.set(changed)
            self.metrics.learner_step.labels(objective="grpo").observe(update.seconds)
            self.metrics.learner_loss.labels(objective="grpo").set(update.loss)
            self.metrics.kl.set(update.kl)
        self.run_dir.log("grpo", batch.step, **record)
        self.run_dir.append_jsonl("traces/grpo.jsonl", self._trace_records(batch))
        log.info(
            "grpo step %d reward %.3f EM %.3f kept %d of %d groups in %d draw(s); served weights changed %.4f "
            "(policy v%d, learner v%d)",
            batch.step,
            components["reward"],
            components["exact_match"],
            batch.kept_groups,
            len(batch.response.groups),
            batch.draws,
            record.get("weights_changed_fraction", 0.0),
            batch.response.policy_version,
            self.learner_version,
        )
        return record

    def _pool_record(self) -> dict:
        """Workers lost and groups generated again so far (a pool's failover; nothing for one worker)."""
        if not isinstance(self.rollout, RolloutPool):
            return {}
        return {"rollout_workers": len(self.rollout), "regenerated_groups": self.rollout.regenerated_groups}

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
