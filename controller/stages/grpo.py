"""The Stage-2 loop: which questions each step trains on (curriculum), and sync or async stepping.

sync:  rollout(t) → update(t) → load weights → rollout(t+1) …
async: rollout(t+1) runs while the learner updates on step t. The new weights are loaded between two
       rollouts (a load requested mid-generation would wait for it anyway), so a trace is at most one
       version behind the learner when it is trained on; `grpo.max_staleness` bounds that lag and traces
       beyond it are dropped and counted, never trained on.

Step t's questions are drawn with an RNG seeded by (seed, t) from the curriculum state at that point, and
the state after each step can be saved: a resumed run draws exactly the questions the stopped one would
have (in async mode the questions of the rollout in flight are saved with it). Dynamic sampling
(`grpo.dynamic_sampling`) refills a step whose groups lacked signal: refill k of step t draws with an RNG of
(seed, t, k) from the same curriculum state (the curriculum only changes between steps), so it too is
drawn again identically on resume.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from controller.stages.curriculum import Curriculum
from controller.stages.training import GRPOStepper, RefillFn, RolloutBatch
from mtr.task import Task

log = logging.getLogger("mtr.grpo")

# on_step(step, record, next_task_ids): after every step, e.g. to checkpoint or evaluate.
StepHook = Callable[[int, dict, list[str]], None]


class GRPOLoop:
    def __init__(self, stepper: GRPOStepper, tasks: Sequence[Task], on_step: StepHook | None = None) -> None:
        self.stepper = stepper
        self.config = stepper.config
        self.curriculum = Curriculum(tasks, self.config.grpo.curriculum)
        self.by_id = {t.id: t for t in tasks}
        self.on_step = on_step
        self.mean_rewards: list[float] = []

    def tasks_for(self, step: int) -> list[Task]:
        rng = random.Random(self.config.seed * 1_000_003 + step)
        return self.curriculum.sample(self.config.grpo.questions_per_step, rng)

    def refill_for(self, step: int) -> RefillFn:
        """Dynamic sampling's source of new questions for `step`: refill k is drawn with an RNG of (seed, step, k)."""

        def refill(draw: int, count: int, used: set[str]) -> list[Task]:
            rng = random.Random(f"refill:{self.config.seed}:{step}:{draw}")  # str seeds hash stably (sha512)
            return self.curriculum.sample(count, rng, exclude=used)

        return refill

    def run(self, start_step: int = 0, pending_task_ids: Sequence[str] | None = None) -> list[float]:
        """Steps start_step .. grpo.steps-1; `pending_task_ids`: the questions of start_step, when saved."""
        steps = self.config.grpo.steps
        if start_step >= steps:
            return self.mean_rewards
        current = [self.by_id[i] for i in pending_task_ids] if pending_task_ids else self.tasks_for(start_step)
        overlap = self.config.grpo.mode == "async" and self.config.grpo.max_staleness >= 1
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grpo-rollout") as background:
            pending: Future[RolloutBatch] | None = None
            for step in range(start_step, steps):
                if pending is not None:
                    batch = pending.result()
                else:
                    batch = self.stepper.rollout_phase(step, current, self.refill_for(step))
                self._fold(batch)
                upcoming = self.tasks_for(step + 1) if step + 1 < steps else []
                pending = None
                if overlap and upcoming:
                    self.stepper.sync_rollout()  # update t-1's weights, loaded between two generations
                    pending = background.submit(
                        self.stepper.rollout_phase, step + 1, upcoming, self.refill_for(step + 1)
                    )
                record = self.stepper.learn_phase(batch)
                if not overlap:
                    self.stepper.sync_rollout()
                self.mean_rewards.append(record["reward"])
                current = upcoming
                if self.on_step is not None:
                    self.on_step(step, record, [t.id for t in upcoming])
            self.stepper.sync_rollout()
        return self.mean_rewards

    def _fold(self, batch: RolloutBatch) -> None:
        for task in batch.tasks:
            self.curriculum.update(task, batch.successes.get(task.id, []))
        self.stepper.metrics.curriculum_level.set(self.curriculum.level)
