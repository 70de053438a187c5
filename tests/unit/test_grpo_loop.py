"""The Stage-2 loop without services: curriculum sampling and promotion, sync/async ordering, staleness, resume,
and dynamic sampling (the real GRPOStepper on a fake rollout and learner)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from controller.cluster.rolloutpool import split_evenly
from controller.stages.curriculum import Curriculum
from controller.stages.grpo import GRPOLoop
from controller.stages.training import RolloutBatch
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
    curriculum = Curriculum(tasks, CurriculumConfig(enabled=True, start_level=2, promote_at=0.75, window=8))
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
    curriculum = Curriculum(tasks, CurriculumConfig(enabled=True, start_level=2, promote_at=1.0))
    curriculum.update(tasks[0], [1.0, 1.0])  # settled
    curriculum.update(tasks[1], [1.0, 0.0])  # mixed
    curriculum.update(tasks[2], [0.0, 0.0])  # settled
    picks = [curriculum.sample(1, random.Random(seed))[0].id for seed in range(400)]
    assert picks.count(tasks[1].id) > 2 * max(picks.count(tasks[0].id), picks.count(tasks[2].id))


def test_balanced_levels_give_each_unlocked_level_an_equal_share():
    tasks = _tasks({2: 30, 3: 5, 4: 5})
    counts = {True: {2: 0, 3: 0, 4: 0}, False: {2: 0, 3: 0, 4: 0}}
    for balance in (True, False):
        curriculum = Curriculum(tasks, CurriculumConfig(enabled=True, start_level=4, balance_levels=balance))
        for seed in range(300):
            counts[balance][curriculum.sample(1, random.Random(seed))[0].hops] += 1
    assert all(80 <= counts[True][level] <= 120 for level in (2, 3, 4))  # about 100 each
    assert counts[False][2] > 180  # by question count: 30 of 40


def test_curriculum_state_round_trips():
    tasks = _tasks({1: 4, 2: 4})
    config = CurriculumConfig(enabled=True, start_level=1, promote_at=0.5, window=4)
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

    def rollout_phase(self, step, tasks, refill=None):
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


# Dynamic sampling: the real GRPOStepper, scoring real trace texts from a fake rollout, training a fake learner.


def _answer_text(task: Task, answer: str) -> str:
    from mtr.grammar import AssistantTurn, Trace, render

    return render(Trace(task.question, (), (AssistantTurn("think", answer=answer),)))


class FakeRollout:
    """Groups whose samples answer right on "mix" questions half the time, and always wrong otherwise."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.seeds: list[int] = []
        self.version = 0

    def generate_groups(self, tasks, group_size, sampling):
        from mtr.v1 import rollout_service_pb2 as rpb

        self.calls.append([t.id for t in tasks])
        self.seeds.append(sampling.seed)
        groups = []
        for task in tasks:
            answers = ["a" if "mix" in task.id and i % 2 == 0 else "wrong" for i in range(group_size)]
            traces = [
                rpb.Trace(
                    task_id=task.id,
                    sample_index=i,
                    token_ids=[1, 2, 3],
                    logprobs=[0.0, -1.0, -1.0],
                    loss_mask=[0, 1, 1],
                    text=_answer_text(task, answer),
                    finish_reason="answer",
                    policy_version=self.version,
                )
                for i, answer in enumerate(answers)
            ]
            groups.append(rpb.Group(task_id=task.id, traces=traces))
        tokens = 2 * group_size * len(tasks)
        return rpb.GenerateGroupsResponse(groups=groups, policy_version=self.version, generated_tokens=tokens)

    def load_weights(self, version, compute_checksum=False):
        from mtr.v1 import rollout_service_pb2 as rpb

        self.version = version
        return rpb.LoadWeightsResponse(version=version)


class FakeLearner:
    def __init__(self) -> None:
        self.version = 0
        self.requests: list[dict] = []

    def train_step(self, objective, sequences, **options):
        from mtr.v1 import learner_service_pb2 as lpb

        self.version += 1
        self.requests.append({"sequences": len(sequences), **options})
        return lpb.TrainStepResponse(version=self.version, weights_changed=3, weights_total=12)


def _dynamic_run(tmp_path, tasks, steps=3, **grpo):
    from controller.reports.metrics import ControllerMetrics
    from controller.reports.rundir import RunDirectory
    from controller.stages.training import GRPOStepper

    config = RunConfig.model_validate(
        {
            "grpo": {"steps": steps, "questions_per_step": 2, "curriculum": {"enabled": False}, **grpo},
            "rollout": {"group_size": 4},
        }
    )
    rollout, learner, metrics = FakeRollout(), FakeLearner(), ControllerMetrics()
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = RunDirectory(tmp_path)
    stepper = GRPOStepper(config, learner, rollout, run_dir, metrics, learner_version=0)
    records = []
    loop = GRPOLoop(stepper, tasks, on_step=lambda step, record, ids: records.append(record))
    loop.run()
    return rollout, learner, metrics, records


def _counter(metrics, name):
    return metrics.registry.get_sample_value(name)


def test_dynamic_sampling_refills_until_the_step_has_groups_with_signal(tmp_path):
    tasks = [Task(id=f"mix-{i}", question=f"q mix {i}?", answers=("a",), hops=2) for i in range(3)]
    tasks += [Task(id=f"flat-{i}", question=f"q flat {i}?", answers=("a",), hops=2) for i in range(9)]
    rollout, learner, metrics, records = _dynamic_run(tmp_path, tasks, max_draws_per_step=12)
    for record in records:
        assert record["groups_drawn"] == record["groups_kept"] + record["groups_dropped"]
        assert record["groups_kept"] == 2  # 3 "mix" questions exist: every step found its 2 groups
        ids = record["task_ids"] + record["refill_task_ids"]
        assert len(record["task_ids"]) == 2
        assert len(ids) == len(set(ids)) == record["groups_drawn"]  # no question twice in a step
        assert record["weights_changed_fraction"] == pytest.approx(0.25)
    # Each refill asks for the missing number of questions only, with a seed of its own.
    assert all(len(call) <= 2 for call in rollout.calls) and len(set(rollout.seeds)) == len(rollout.seeds)
    assert [r["sequences"] for r in learner.requests] == [8, 8, 8]
    assert [r["reset_optimizer"] for r in learner.requests] == [True, False, False]  # fresh moments once
    drawn = sum(r["groups_drawn"] for r in records)
    assert _counter(metrics, "mtr_grpo_groups_drawn_total") == drawn
    assert _counter(metrics, "mtr_grpo_groups_kept_total") == 6
    assert _counter(metrics, "mtr_grpo_groups_dropped_total") == drawn - 6
    assert _counter(metrics, "mtr_weights_changed_fraction") == pytest.approx(0.25)


def test_dynamic_sampling_stops_at_the_draw_bound_and_without_it_draws_once(tmp_path):
    tasks = [Task(id=f"flat-{i}", question=f"q flat {i}?", answers=("a",), hops=2) for i in range(12)]
    rollout, learner, _, records = _dynamic_run(tmp_path / "bounded", tasks, steps=2, max_draws_per_step=3)
    assert [r["draws"] for r in records] == [3, 3] and len(rollout.calls) == 6
    assert all(r["groups_kept"] == 0 and r["groups_dropped"] == 6 for r in records)
    assert learner.requests == []  # nothing had signal: no update
    rollout, _, _, records = _dynamic_run(tmp_path / "off", tasks, steps=2, dynamic_sampling=False)
    assert [r["draws"] for r in records] == [1, 1] and len(rollout.calls) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dynamic_sampling_draws_the_same_questions_again_on_resume(tmp_path, mode):
    from controller.reports.metrics import ControllerMetrics
    from controller.reports.rundir import RunDirectory
    from controller.stages.training import GRPOStepper

    tasks = [Task(id=f"mix-{i}", question=f"q mix {i}?", answers=("a",), hops=2 + i % 2) for i in range(3)]
    tasks += [Task(id=f"flat-{i}", question=f"q flat {i}?", answers=("a",), hops=2 + i % 2) for i in range(9)]
    config = RunConfig.model_validate(
        {"grpo": {"steps": 4, "questions_per_step": 2, "mode": mode, "max_draws_per_step": 4}}
    )

    def loop_for(path, on_step=None):
        path.mkdir(parents=True, exist_ok=True)
        stepper = GRPOStepper(config, FakeLearner(), FakeRollout(), RunDirectory(path), ControllerMetrics(), 0)
        return GRPOLoop(stepper, tasks, on_step=on_step)

    saved = {}

    def save_after_step_1(step, record, next_ids):
        if step == 1:
            saved.update(curriculum=full.curriculum.state(), next_ids=next_ids)

    full = loop_for(tmp_path / "full", save_after_step_1)
    full.run()
    again = loop_for(tmp_path / "again")
    again.curriculum.restore(saved["curriculum"])
    again.run(start_step=2, pending_task_ids=saved["next_ids"])
    full_calls, again_calls = full.stepper.rollout.calls, again.stepper.rollout.calls
    assert again_calls == full_calls[len(full_calls) - len(again_calls) :]
    assert again.stepper.rollout.seeds == full.stepper.rollout.seeds[len(full_calls) - len(again_calls) :]


class CutRollout(FakeRollout):
    """As FakeRollout, but odd samples of every group are cut by the token budget (and answer nothing)."""

    def generate_groups(self, tasks, group_size, sampling):
        response = super().generate_groups(tasks, group_size, sampling)
        for group in response.groups:
            for trace in group.traces[1::2]:
                trace.finish_reason = "length"
                trace.text = trace.text.replace("<answer>wrong</answer>", "")
        return response


@pytest.mark.parametrize("truncated", ["keep", "mask", "penalize"])
def test_truncated_traces_are_kept_masked_or_penalized(tmp_path, truncated):
    from controller.reports.metrics import ControllerMetrics
    from controller.reports.rundir import RunDirectory
    from controller.stages.training import GRPOStepper

    config = RunConfig.model_validate({"grpo": {"truncated": truncated}, "rollout": {"group_size": 4}})
    stepper = GRPOStepper(config, FakeLearner(), CutRollout(), RunDirectory(tmp_path), ControllerMetrics(), 0)
    task = Task(id="mix-0", question="q?", answers=("a",))
    batch = stepper.rollout_phase(0, [task])
    rewards = [b.reward for _, b in batch.scored]
    assert batch.truncated == 2
    cut_reward = config.reward.format_penalty if truncated == "penalize" else rewards[1]
    assert rewards[1] == rewards[3] == cut_reward
    assert rewards[0] == rewards[2] > cut_reward
    if truncated == "penalize":
        assert rewards[1] == -0.5
    trained = [trace.sample_index for trace, _ in batch.trainable]
    assert trained == ([0, 2] if truncated == "mask" else [0, 1, 2, 3])
    assert batch.truncated_masked == (2 if truncated == "mask" else 0)


def test_the_noise_schedule_is_sent_to_the_farm_before_each_step_and_logged(tmp_path):
    from controller.reports.metrics import ControllerMetrics
    from controller.reports.rundir import RunDirectory
    from controller.stages.training import GRPOStepper, noise_setter

    config = RunConfig.model_validate(
        {
            "grpo": {"steps": 5, "questions_per_step": 2, "curriculum": {"enabled": False}},
            "rollout": {"group_size": 4},
            "simulator": {"actor": "model", "actor_model": "some/ckpt", "noise": {"start": 0.2, "end": 0.6}},
        }
    )
    shares = []

    class Farm:
        def set_noise(self, share):
            shares.append(share)

    assert noise_setter(RunConfig(), Farm()) is None  # the grounded actor has no noisy mode
    stepper = GRPOStepper(
        config,
        FakeLearner(),
        FakeRollout(),
        RunDirectory(tmp_path),
        ControllerMetrics(),
        0,
        noise_setter(config, Farm()),
    )
    records = []
    tasks = [Task(id=f"mix-{i}", question=f"q mix {i}?", answers=("a",), hops=2) for i in range(4)]
    GRPOLoop(stepper, tasks, on_step=lambda step, record, ids: records.append(record)).run()
    assert shares == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert [r["noise_share"] for r in records] == pytest.approx(shares)
