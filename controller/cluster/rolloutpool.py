"""K rollout workers behind the one interface a single worker has.

A step's groups are split across the workers (contiguous shares, so the split depends only on K) and
generated concurrently; the answers are merged back in task order. Weight loads go to every worker at
once. Each worker keeps its own seed offset, so a run with the same K and seed is reproducible.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from mtr.serviceclients import RolloutClient, ServiceError
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb

log = logging.getLogger("mtr.rollout_pool")


def split_evenly(count: int, parts: int) -> list[range]:
    """Contiguous index ranges of sizes differing by at most one (earlier parts get the extra)."""
    size, extra = divmod(count, parts)
    ranges, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        ranges.append(range(start, end))
        start = end
    return ranges


WORKER_GONE = frozenset({grpc.StatusCode.UNAVAILABLE})  # the process died or its port closed: try another


class RolloutPool:
    """Rollout workers behind one client. A worker that dies is dropped: its share of a step is generated
    again, with the share's own seed, on a worker still alive, and later weight loads skip it (Ray's advice for
    stateless actors: retry the task elsewhere). Only when none is left does a step fail."""

    def __init__(self, workers: Sequence[RolloutClient], on_lost: Callable[[str, str], None] | None = None) -> None:
        """`on_lost(address, reason)` is told of every worker dropped (the controller counts and logs it)."""
        if not workers:
            raise ValueError("a rollout pool needs at least one worker")
        self.workers = list(workers)
        self.address = ",".join(w.address for w in self.workers)
        self.lost: list[str] = []  # addresses of dropped workers, in the order they failed
        self.regenerated_groups = 0  # groups generated again because their worker died mid-step
        self.on_lost = on_lost
        self._live = list(range(len(self.workers)))
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=len(self.workers), thread_name_prefix="rollout-pool")

    def __len__(self) -> int:
        return len(self._live)

    def _drop(self, index: int, error: ServiceError) -> None:
        with self._lock:
            if index not in self._live:
                return
            self._live.remove(index)
            address = self.workers[index].address
            self.lost.append(address)
        log.warning("rollout worker %s is gone (%s); %d worker(s) left", address, error, len(self._live))
        if self.on_lost is not None:
            self.on_lost(address, str(error))

    def _call_live(self, index: int, call):
        """`call(worker)` on worker `index`, then on each other live worker in turn while workers die."""
        for attempt in itertools.count():
            try:
                return call(self.workers[index])
            except ServiceError as error:
                if error.code not in WORKER_GONE:
                    raise
                self._drop(index, error)
                with self._lock:
                    if not self._live:
                        gone = ", ".join(self.lost)
                        raise ServiceError(
                            f"every rollout worker is gone ({gone}); last: {error}", error.code
                        ) from None
                    index = self._live[(index + attempt) % len(self._live)]
        raise AssertionError("unreachable")

    def generate_groups(
        self, tasks: Sequence[Task], group_size: int, sampling: rpb.SamplingConfig
    ) -> rpb.GenerateGroupsResponse:
        """All groups of `tasks`, in task order; `policy_version` is the oldest version any worker used."""
        start = time.perf_counter()
        live = list(self._live)
        if not live:
            raise ServiceError(f"every rollout worker is gone ({', '.join(self.lost)})")
        jobs = []
        for share_index, share in enumerate(split_evenly(len(tasks), len(live))):
            if not share:
                continue
            worker_sampling = rpb.SamplingConfig()
            worker_sampling.CopyFrom(sampling)
            worker_sampling.seed = sampling.seed + 7919 * share_index
            part = [tasks[i] for i in share]
            jobs.append(
                self._threads.submit(self._generate_share, live[share_index], part, group_size, worker_sampling)
            )
        replies = [job.result() for job in jobs]
        merged = rpb.GenerateGroupsResponse(
            policy_version=min(r.policy_version for r in replies),
            generated_tokens=sum(r.generated_tokens for r in replies),
            seconds=time.perf_counter() - start,
        )
        for reply in replies:
            merged.groups.extend(reply.groups)
        return merged

    def _generate_share(self, index: int, part, group_size: int, sampling) -> rpb.GenerateGroupsResponse:
        first_try = [True]

        def call(worker: RolloutClient) -> rpb.GenerateGroupsResponse:
            if not first_try[0]:
                with self._lock:
                    self.regenerated_groups += len(part)
                log.warning("generating %d group(s) again on rollout worker %s", len(part), worker.address)
            first_try[0] = False
            return worker.generate_groups(part, group_size, sampling)

        return self._call_live(index, call)

    def load_weights(self, version: int, compute_checksum: bool = False) -> list[rpb.LoadWeightsResponse]:
        """Every live worker loads `version`; a worker found dead here is dropped, not waited for."""
        jobs = [(i, self._threads.submit(self.workers[i].load_weights, version, compute_checksum)) for i in self._live]
        replies = []
        for index, job in jobs:
            try:
                replies.append(job.result())
            except ServiceError as error:
                if error.code not in WORKER_GONE:
                    raise
                self._drop(index, error)
        if not replies:
            raise ServiceError(f"every rollout worker is gone ({', '.join(self.lost)})")
        return replies

    def join_weight_group(self, group, first_rank: int = 1) -> int:
        """Every worker joins the learner's weight group (concurrently: the group forms once all are in);
        worker i takes rank first_rank + i. Returns the ranks taken. (A collective group cannot lose a member:
        with `learner.weight_sync: collective` a dead worker fails the step instead of being dropped.)"""
        jobs = [self._threads.submit(w.join_weight_group, group, first_rank + i) for i, w in enumerate(self.workers)]
        return sum(job.result() for job in jobs)

    def status(self, compute_checksum: bool = False) -> list[rpb.GetRolloutStatusResponse]:
        return [self.workers[i].status(compute_checksum) for i in self._live]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers:
            worker.close()
