"""Bringing the rollout workers to the learner's latest weights version, by either route.

- object store: the learner published the version when it trained; each worker fetches and loads it.
- collective: the learner staged the version when it trained; the controller asks every worker to load
  (they wait in the group's broadcast) and the learner to send, at the same time. Before that, every sync
  asks the learner for its group and the workers to join it: both ends answer a repeated request at once
  (same group, already a member), so nothing here remembers who joined, and a restarted learner's new
  group is joined rather than waited on.

Either way every sync is logged (seconds of publish and load, bytes) and counted in the controller's metrics.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import get_args

from controller.cluster.rolloutpool import RolloutPool
from controller.reports.metrics import ControllerMetrics
from controller.reports.rundir import RunDirectory
from mtr.config import LearnerConfig
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.v1 import rollout_service_pb2 as rpb

log = logging.getLogger("mtr.train")

SYNC_METHODS = get_args(LearnerConfig.model_fields["weight_sync"].annotation)  # the config's choices


def sync_weights(
    version: int,
    publish_seconds: float,
    learner: LearnerClient,
    rollout: RolloutClient | RolloutPool,
    metrics: ControllerMetrics,
    run_dir: RunDirectory,
    verify: bool = False,
    method: str = "object_store",
) -> bool | None:
    """Load `version` on every rollout worker by `method` (`learner.weight_sync`); with `verify`, compare
    their checksums with the learner's."""
    if method not in SYNC_METHODS:
        raise ValueError(f"unknown weight sync method {method!r}; expected one of {SYNC_METHODS}")
    if method == "collective":
        replies, send_seconds = collective_load(version, learner, rollout, verify)
        publish_seconds += send_seconds
    else:
        replies = _as_list(rollout.load_weights(version, compute_checksum=verify))
    load_seconds = max(r.seconds for r in replies)  # workers load concurrently
    total_bytes = sum(r.bytes for r in replies)
    metrics.weight_sync.observe(publish_seconds + load_seconds)
    metrics.weight_sync_bytes.inc(total_bytes)
    metrics.policy_version.set(version)
    match = None
    if verify:
        expected = learner.status(compute_checksum=True).checksum
        match = all(r.checksum == expected for r in replies)
    run_dir.log(
        "weight_sync",
        version,
        publish_seconds=publish_seconds,
        load_seconds=load_seconds,
        bytes=total_bytes,
        workers=len(replies),
        checksum_match=match,
        method=method,
    )
    return match


def collective_load(
    version: int, learner: LearnerClient, rollout: RolloutClient | RolloutPool, verify: bool = False
) -> tuple[list[rpb.LoadWeightsResponse], float]:
    """Every worker waits in LoadWeights while the learner broadcasts; returns their replies and the send time.

    If the learner cannot send, it releases the waiting workers with its reason, and its error is raised.
    """
    join_weight_group(learner, rollout)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-load") as threads:
        loading = threads.submit(rollout.load_weights, version, verify)
        try:
            sent = learner.send_weights(version)
        except Exception:
            loading.exception()  # the workers were released; wait for them before reporting the learner's error
            raise
        replies = _as_list(loading.result())
    return replies, sent.seconds


def join_weight_group(learner: LearnerClient, rollout: RolloutClient | RolloutPool) -> None:
    """Open the learner's weight group for these workers and have them join (a no-op once they are in)."""
    receivers = len(rollout) if isinstance(rollout, RolloutPool) else 1
    group = learner.open_weight_group(receivers)
    if isinstance(rollout, RolloutPool):
        ranks = rollout.join_weight_group(group)
    else:
        ranks = rollout.join_weight_group(group, rank=1)
    if ranks != receivers:
        raise RuntimeError(f"weight group at {group.address}: expected {receivers} receiving ranks, got {ranks}")
    log.debug("weight group at %s (%s): learner + %d rollout engine(s)", group.address, group.backend, ranks)


def _as_list(replies) -> list[rpb.LoadWeightsResponse]:
    return replies if isinstance(replies, list) else [replies]
