"""Which questions a GRPO step trains on: easy first, then harder as the policy succeeds.

Levels are hop counts. The curriculum starts at `start_level` (or the easiest level there is) and
unlocks the next level when the running success rate of the current one reaches `promote_at`. Within
the unlocked levels it prefers questions the policy sometimes solves: a group whose samples all fail or
all succeed has no reward variance, so it teaches nothing (GRPO drops it). The whole state is plain
JSON so a resumed run samples exactly what the interrupted one would have.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Collection, Sequence

from mtr.config import CurriculumConfig
from mtr.task import Task

# Sampling weight by what the policy did on a question so far.
WEIGHT_MIXED = 3.0  # some samples right, some wrong: the most to learn from
WEIGHT_UNSEEN = 1.0
WEIGHT_SETTLED = 0.2  # always right, or always wrong after two tries: little signal left
MIN_EVIDENCE = 8  # traces of a level before its success rate can promote


class Curriculum:
    def __init__(self, tasks: Sequence[Task], config: CurriculumConfig) -> None:
        if not tasks:
            raise ValueError("the curriculum needs at least one training question")
        self.config = config
        self.tasks = list(tasks)
        self.levels = sorted({max(1, t.hops) for t in self.tasks})
        reachable = [i for i, level in enumerate(self.levels) if level <= config.start_level]
        self.level_index = reachable[-1] if reachable else 0
        self.recent: dict[int, deque[float]] = {level: deque(maxlen=config.window) for level in self.levels}
        self.per_task: dict[str, list[float]] = {}  # task id -> [successes, attempts]

    @property
    def level(self) -> int:
        """Hardest hop count currently sampled (exported as the curriculum level metric)."""
        return self.levels[self.level_index] if self.config.enabled else self.levels[-1]

    def sample(self, count: int, rng: random.Random, exclude: Collection[str] = ()) -> list[Task]:
        """`count` distinct questions (fewer if there are not that many), weighted as the module says; none whose
        id is in `exclude` (a dynamic-sampling refill skips the step's questions so far)."""
        candidates = [t for t in self.tasks if t.id not in exclude] if exclude else self.tasks
        if not self.config.enabled:
            return rng.sample(candidates, min(count, len(candidates)))
        pool = [t for t in candidates if max(1, t.hops) <= self.level]
        weights = [self._weight(t) for t in pool]
        chosen: list[Task] = []
        for _ in range(min(count, len(pool))):
            index = self._pick(pool, weights, rng)
            chosen.append(pool.pop(index))
            weights.pop(index)
        return chosen

    def _pick(self, pool: Sequence[Task], weights: Sequence[float], rng: random.Random) -> int:
        """Index of one question: by weight, or with `balance_levels` by weight within a uniformly drawn level."""
        indices = range(len(pool))
        if self.config.balance_levels:
            level = rng.choice(sorted({max(1, t.hops) for t in pool}))
            indices = [i for i in indices if max(1, pool[i].hops) == level]
        return rng.choices(list(indices), weights=[weights[i] for i in indices])[0]

    def _weight(self, task: Task) -> float:
        successes, attempts = self.per_task.get(task.id, (0.0, 0.0))
        if attempts == 0:
            return WEIGHT_UNSEEN
        rate = successes / attempts
        if 0.0 < rate < 1.0:
            return WEIGHT_MIXED
        return WEIGHT_SETTLED if attempts >= 2 else WEIGHT_UNSEEN

    def update(self, task: Task, successes: Sequence[float]) -> None:
        """Fold in one group's outcomes (1.0 = answered right); may unlock the next level."""
        record = self.per_task.setdefault(task.id, [0.0, 0.0])
        record[0] += sum(successes)
        record[1] += len(successes)
        level = max(1, task.hops)
        if level in self.recent:
            self.recent[level].extend(successes)
        self._maybe_promote()

    def success_rate(self, level: int) -> float | None:
        history = self.recent.get(level)
        return sum(history) / len(history) if history else None

    def _maybe_promote(self) -> None:
        history = self.recent[self.level]
        if self.level_index + 1 >= len(self.levels) or len(history) < min(MIN_EVIDENCE, self.config.window):
            return
        if sum(history) / len(history) >= self.config.promote_at:
            self.level_index += 1

    # -- resume -----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "level_index": self.level_index,
            "recent": {str(level): list(h) for level, h in self.recent.items()},
            "per_task": self.per_task,
        }

    def restore(self, state: dict) -> None:
        self.level_index = int(state["level_index"])
        for level, history in state["recent"].items():
            self.recent[int(level)] = deque(history, maxlen=self.config.window)
        self.per_task = {k: list(v) for k, v in state["per_task"].items()}
