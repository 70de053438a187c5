"""A rollout worker that dies is dropped from the pool: its share of the step is generated again on a live
worker with the share's own seed (so nothing is lost and nothing counted twice), later loads skip it, and only
a pool with no worker left fails, naming every worker it lost. A wrong request is not retried anywhere."""

from __future__ import annotations

import grpc
import pytest

from controller.cluster.rolloutpool import RolloutPool
from mtr.serviceclients import ServiceError
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb


class FakeWorker:
    def __init__(self, address: str, fail_with: grpc.StatusCode | None = None) -> None:
        self.address, self.fail_with = address, fail_with
        self.calls: list[tuple[list[str], int]] = []
        self.loads: list[int] = []

    def _maybe_fail(self, method: str) -> None:
        if self.fail_with is not None:
            raise ServiceError(f"{method} on {self.address} failed: {self.fail_with.name}", self.fail_with)

    def generate_groups(self, tasks, group_size, sampling):
        self._maybe_fail("RolloutService.GenerateGroups")
        self.calls.append(([t.id for t in tasks], sampling.seed))
        groups = [
            rpb.Group(task_id=t.id, traces=[rpb.Trace(task_id=t.id, sample_index=i) for i in range(group_size)])
            for t in tasks
        ]
        return rpb.GenerateGroupsResponse(groups=groups, policy_version=3, generated_tokens=10 * len(tasks))

    def load_weights(self, version, compute_checksum=False):
        self._maybe_fail("RolloutService.LoadWeights")
        self.loads.append(version)
        return rpb.LoadWeightsResponse(version=version)

    def close(self) -> None:
        pass


def _tasks(n: int) -> list[Task]:
    return [Task(id=f"q{i}", question=f"question {i}?", answers=("a",)) for i in range(n)]


def test_a_dead_workers_share_is_generated_again_elsewhere_with_its_own_seed():
    alive, dead = FakeWorker("a:1"), FakeWorker("b:2", grpc.StatusCode.UNAVAILABLE)
    lost = []
    pool = RolloutPool([alive, dead], on_lost=lambda address, reason: lost.append((address, reason)))
    reply = pool.generate_groups(_tasks(4), 2, rpb.SamplingConfig(seed=100))
    assert [g.task_id for g in reply.groups] == ["q0", "q1", "q2", "q3"]  # task order, each group once
    assert sum(len(g.traces) for g in reply.groups) == 8
    assert alive.calls == [(["q0", "q1"], 100), (["q2", "q3"], 100 + 7919)]  # the second share keeps its seed
    assert pool.lost == ["b:2"] and pool.regenerated_groups == 2 and len(pool) == 1
    assert lost[0][0] == "b:2" and "UNAVAILABLE" in lost[0][1]
    pool.load_weights(4)
    assert alive.loads == [4] and dead.loads == []  # a dropped worker is not waited for again


def test_a_worker_found_dead_while_loading_weights_is_dropped():
    alive, dead = FakeWorker("a:1"), FakeWorker("b:2", grpc.StatusCode.UNAVAILABLE)
    pool = RolloutPool([alive, dead])
    assert [r.version for r in pool.load_weights(5)] == [5]
    assert pool.lost == ["b:2"]
    pool.generate_groups(_tasks(2), 1, rpb.SamplingConfig(seed=1))
    assert [ids for ids, _ in alive.calls] == [["q0", "q1"]]  # one live worker: one share


def test_no_worker_left_fails_naming_every_lost_worker():
    pool = RolloutPool([FakeWorker(f"w:{i}", grpc.StatusCode.UNAVAILABLE) for i in range(2)])
    with pytest.raises(ServiceError, match=r"every rollout worker is gone \(w:\d, w:\d\)") as caught:
        pool.generate_groups(_tasks(2), 2, rpb.SamplingConfig())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ServiceError, match="every rollout worker is gone"):
        pool.generate_groups(_tasks(2), 2, rpb.SamplingConfig())


def test_a_wrong_request_is_not_retried_on_another_worker():
    rejecting, other = FakeWorker("a:1", grpc.StatusCode.INVALID_ARGUMENT), FakeWorker("b:2")
    pool = RolloutPool([rejecting, other])
    with pytest.raises(ServiceError, match="INVALID_ARGUMENT"):
        pool.generate_groups(_tasks(2), 2, rpb.SamplingConfig())
    assert pool.lost == [] and len(pool) == 2
