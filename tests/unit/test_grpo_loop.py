"""The Stage-2 loop without services: curriculum sampling and promotion, sync/async ordering, staleness, resume."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from controller.curriculum import Curriculum
from controller.grpo import GRPOLoop
from controller.rolloutpool import split_evenly
from controller.training import RolloutBatch
from mtr.config import CurriculumConfig, RunConfig
from mtr.task import Task


def _tasks(hops_counts: dict[int, int]) -> list[Task]:
    return [
        Task(id=f"h{h}-{i}", question=f"q{h}-{i}?", answers=("a",), hops=h)
        for h, n in hops_counts.items()
        for i in range(n)
    ]


def test_split_evenly_covers_every_index_once():
    assert [list(r) for r in split_evenly(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [len(r) for r in split_evenly(2, 3)] == [1, 1, 0]


def test_curriculum_starts_easy_and_promotes_on_success():
    tasks = _tasks({2: 6, 3: 6, 4: 6})
    curriculum = Curriculum(tasks, CurriculumConfig(start_level=2, promote_at=0.75, window=8))
    assert curriculum.level == 2
    assert {t.hops for t in curriculum.sample(6, random.Random(0))} == {2}
    for task in tasks[:2]:
        curriculum.update(task, [0.0, 0.0, 0.0, 0.0])
    assert curriculum.level == 2  # 8 failures: not promoted
    curriculum.update(tasks[2], [1.0, 1.0, 1.0, 1.0])
    assert curriculum.level == 2  # the window of 8 holds 4 failures and 4 successes: 0.5 < 0.75
    curriculum.update(tasks[3], [1.0, 1.0, 1.0, 1.0])
    assert curriculum.level == 3
    assert {t.hops for t in curriculum.sample(12, random.Random(0))} == {2, 3}


def test_curriculum_prefers_questions_with_mixed_outcomes():
    tasks = _tasks({2: 3})
    curriculum = Curriculum(tasks, CurriculumConfig(start_level=2, promote_at=1.0))
    curriculum.update(tasks[0], [1.0, 1.0])  # settled
    curriculum.update(tasks[1], [1.0, 0.0])  # mixed
    curriculum.update(tasks[2], [0.0, 0.0])  # settled
    picks = [curriculum.sample(1, random.Random(seed))[0].id for seed in range(400)]
    assert picks.count(tasks[1].id) > 2 * max(picks.count(tasks[0].id), picks.count(tasks[2].id))


def test_curriculum_state_round_trips():
    tasks = _tasks({1: 4, 2: 4})
    config = CurriculumConfig(start_level=1, promote_at=0.5, window=4)
    first = Curriculum(tasks, config)
    for task in tasks[:4]:
        first.update(task, [1.0, 1.0])
    second = Curriculum(tasks, config)
    second.restore(first.state())
    assert second.level == first.level == 2
    assert [t.id for t in second.sample(4, random.Random(3))] == [t.id for t in first.sample(4, random.Random(3))]


@dataclass
class FakeStepper:
    """Stands in for GRPOStepper: versions advance on every update; rollouts record the version they ran with."""

    config: RunConfig
    learner_version: int = 0
    loaded_version: int = 0
    staleness: list[int] = field(default_factory=list)
    task_ids: list[list[str]] = field(default_factory=list)
    concurrent: list[bool] = field(default_factory=list)
    _learning: threading.Event = field(default_factory=threading.Event)
    metrics: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(curriculum_level=SimpleNamespace(set=id)))

    def rollout_phase(self, step, tasks):
        self.concurrent.append(self._learning.is_set())
        response = SimpleNamespace(policy_version=self.loaded_version)
        return RolloutBatch(step, list(tasks), response, [], [], 0, {t.id: [1.0, 0.0] for t in tasks})

    def learn_phase(self, batch):
        self._learning.set()
        try:
            threading.Event().wait(0.05)  # let a background rollout start
            self.staleness.append(self.learner_version - batch.response.policy_version)
            self.task_ids.append([t.id for t in batch.tasks])
            self.learner_version += 1
        finally:
            self._learning.clear()
        return {"reward": float(batch.step)}

    def sync_rollout(self):
        self.loaded_version = self.learner_version


def _config(mode: str, steps: int = 5, staleness: int = 1) -> RunConfig:
    return RunConfig.model_validate(
        {"grpo": {"steps": steps, "questions_per_step": 2, "mode": mode, "max_staleness": staleness}}
    )


def test_sync_mode_trains_on_fresh_traces_only():
    stepper = FakeStepper(_config("sync"))
    assert GRPOLoop(stepper, _tasks({2: 8})).run() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert stepper.staleness == [0, 0, 0, 0, 0]
    assert stepper.loaded_version == stepper.learner_version == 5


def test_async_mode_overlaps_and_stays_within_the_staleness_bound():
    stepper = FakeStepper(_config("async"))
    GRPOLoop(stepper, _tasks({2: 8})).run()
    assert max(stepper.staleness) <= 1 and stepper.staleness[1:] == [1, 1, 1, 1]
    assert any(stepper.concurrent), "a rollout ran while the learner was updating"
    assert stepper.loaded_version == stepper.learner_version


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resume_draws_the_questions_the_stopped_run_would_have(mode):
    tasks = _tasks({2: 6, 3: 6})
    full = FakeStepper(_config(mode, steps=4))
    saved = {}

    def save_after_step_1(step, record, next_ids):
        if step == 1:
            saved.update(curriculum=loop.curriculum.state(), next_ids=next_ids)

    loop = GRPOLoop(full, tasks, on_step=save_after_step_1)
    loop.run()
    resumed = FakeStepper(_config(mode, steps=4))
    again = GRPOLoop(resumed, tasks)
    again.curriculum.restore(saved["curriculum"])
    again.run(start_step=2, pending_task_ids=saved["next_ids"])
    assert resumed.task_ids == full.task_ids[2:]
