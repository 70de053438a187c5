"""K rollout workers behind the one interface a single worker has.

A step's groups are split across the workers (contiguous shares, so the split depends only on K) and
generated concurrently; the answers are merged back in task order. Weight loads go to every worker at
once. Each worker keeps its own seed offset, so a run with the same K and seed is reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from mtr.serviceclients import RolloutClient
from mtr.task import Task
from mtr.v1 import rollout_service_pb2 as rpb


def split_evenly(count: int, parts: int) -> list[range]:
    """Contiguous index ranges of sizes differing by at most one (earlier parts get the extra)."""
    size, extra = divmod(count, parts)
    ranges, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        ranges.append(range(start, end))
        start = end
    return ranges


class RolloutPool:
    def __init__(self, workers: Sequence[RolloutClient]) -> None:
        if not workers:
            raise ValueError("a rollout pool needs at least one worker")
        self.workers = list(workers)
        self.address = ",".join(w.address for w in self.workers)
        self._threads = ThreadPoolExecutor(max_workers=len(self.workers), thread_name_prefix="rollout-pool")

    def __len__(self) -> int:
        return len(self.workers)

    def generate_groups(
        self, tasks: Sequence[Task], group_size: int, sampling: rpb.SamplingConfig
    ) -> rpb.GenerateGroupsResponse:
        """All groups of `tasks`, in task order; `policy_version` is the oldest version any worker used."""
        start = time.perf_counter()
        jobs = []
        for index, share in enumerate(split_evenly(len(tasks), len(self.workers))):
            if not share:
                continue
            worker_sampling = rpb.SamplingConfig()
            worker_sampling.CopyFrom(sampling)
            worker_sampling.seed = sampling.seed + 7919 * index
            part = [tasks[i] for i in share]
            jobs.append(self._threads.submit(self.workers[index].generate_groups, part, group_size, worker_sampling))
        replies = [job.result() for job in jobs]
        merged = rpb.GenerateGroupsResponse(
            policy_version=min(r.policy_version for r in replies),
            generated_tokens=sum(r.generated_tokens for r in replies),
            seconds=time.perf_counter() - start,
        )
        for reply in replies:
            merged.groups.extend(reply.groups)
        return merged

    def load_weights(self, version: int, compute_checksum: bool = False) -> list[rpb.LoadWeightsResponse]:
        jobs = [self._threads.submit(w.load_weights, version, compute_checksum) for w in self.workers]
        return [job.result() for job in jobs]

    def join_weight_group(self, group, first_rank: int = 1) -> int:
        """Every worker joins the learner's weight group (concurrently: the group forms once all are in);
        worker i takes rank first_rank + i. Returns the ranks taken."""
        jobs = [self._threads.submit(w.join_weight_group, group, first_rank + i) for i, w in enumerate(self.workers)]
        return sum(job.result() for job in jobs)

    def status(self, compute_checksum: bool = False) -> list[rpb.GetRolloutStatusResponse]:
        return [w.status(compute_checksum) for w in self.workers]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers:
            worker.close()
