"""Collective weight sync for real on loopback: the DeepSpeed learner (rank 0) broadcasts each version over gloo
to two vLLM rollout workers (ranks 1 and 2), every service a Ray actor behind gRPC, on the tiny model.
"""

from __future__ import annotations

import json
import random

import pytest

from controller.cluster.services import Services
from controller.cluster.weightsync import collective_load, sync_weights
from controller.reports.metrics import ControllerMetrics
from controller.reports.rundir import RunDirectory
from mtr.config import load_config
from mtr.serviceclients import ServiceError
from mtr.v1 import learner_service_pb2 as lpb

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def wired(tiny_model_dir, tmp_path_factory):
    config = load_config(
        overrides=[
            f"runs_dir={tmp_path_factory.mktemp('runs')}",
            f"model.path={tiny_model_dir}",
            "name=collective",
            "cluster.num_cpus=4",
            "rollout.workers=2",
            "rollout.kv_cache_gib=1",  # two engines: the default 4 GiB each is for 200-question evaluations
            "rollout.max_model_len=1024",
            "learner.weight_sync=collective",
            "learner.weight_bucket_mb=1",  # the tiny model's ~7 MB travel in several buckets
            "learner.weight_sync_timeout_s=120",
        ]
    )
    run_dir = RunDirectory.create(config)
    with Services(config, run_dir.path / "logs") as services:
        services.start()
        _, learner = services.learner(str(tiny_model_dir), total_steps=10)
        _, pool = services.rollout_pool(str(tiny_model_dir))
        yield learner, pool, run_dir
    run_dir.close()


def _sequences(seed: int) -> list[lpb.TrainSequence]:
    rng = random.Random(seed)
    lengths = (40, 33, 20)
    return [
        lpb.TrainSequence(
            token_ids=[rng.randrange(500) for _ in range(n)], loss_mask=[0] * (n // 2) + [1] * (n - n // 2)
        )
        for n in lengths
    ]


def _step(learner, seed: int) -> lpb.TrainStepResponse:
    return learner.train_step(lpb.OBJECTIVE_SFT, _sequences(seed), publish_weights=True, learning_rate=1e-3)


def test_each_version_reaches_both_workers_through_the_group(wired):
    from mtr.broadcast import RayObjectStoreBroadcast

    learner, pool, run_dir = wired
    for seed in (0, 1):
        update = _step(learner, seed)
        assert update.publish_bytes > 0  # staged on the learner
        match = sync_weights(
            update.version,
            update.publish_seconds,
            learner,
            pool,
            ControllerMetrics(),
            run_dir,
            True,
            method="collective",
        )
        assert match is True  # both workers received exactly the learner's weights
        assert [s.policy_version for s in pool.status()] == [update.version] * 2
        with pytest.raises(KeyError):  # nothing went through the object store
            RayObjectStoreBroadcast().fetch(update.version)
    lines = (run_dir.path / "metrics.jsonl").read_text().splitlines()
    syncs = [r for r in map(json.loads, lines) if r["event"] == "weight_sync"]
    assert [(s["method"], s["workers"]) for s in syncs] == [("collective", 2)] * 2
    assert all(s["bytes"] == 2 * update.publish_bytes for s in syncs)


def test_a_version_never_staged_fails_on_every_side_and_the_group_goes_on(wired):
    learner, pool, run_dir = wired
    version = learner.status().version
    with pytest.raises(ServiceError, match=f"weights version {version + 5} was not published"):
        collective_load(version + 5, learner, pool)
    update = _step(learner, seed=2)  # the group is still in step: the next sync works
    replies, _ = collective_load(update.version, learner, pool, verify=True)
    expected = learner.status(compute_checksum=True).checksum
    assert [(r.version, r.checksum) for r in replies] == [(update.version, expected)] * 2
