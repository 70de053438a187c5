"""Data-parallel learner ranks on Ray, driven as one learner (`RayLearnerGroup`), and the factory choosing it.

One DeepSpeed rank per Ray actor, all ranks in one placement group (PACK: on as few nodes as fit):

    host process (LearnerService)
      RayLearnerGroup ──ray──▶ rank 0 actor: PolicyLearner   ◀── holds the weights the host publishes/saves
                      ──ray──▶ rank 1 actor: PolicyLearner
                      ──ray──▶ ...
                               └──── gloo (CPU) / NCCL (GPU): gradient reduction, barriers ────┘

A step splits its sequences across the ranks balanced by token count. Every rank divides its loss by
(all ranks' masked tokens / world_size), because DeepSpeed averages the ranks' gradients: the update is the
token mean over the whole step, as on one rank (GRPO's sequence-mean modes: all ranks' sequences instead).
Ranks run equally many micro-batches (ZeRO reduces inside each backward), padding with zero-weight ones.
With a KL term each rank holds its own frozen reference (all equal: every rank takes it from the same weights
at the same step). Ray is imported lazily; the sharding math is pure.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learner.engine import (
    LearnerError,
    LearnerLike,
    StepResult,
    TrainSequence,
    plan_micro_batches,
    resolve_clip,
    validate_kl_coef,
    validate_sequences,
)
from learner.losses import step_normalizer
from mtr.config import LearnerConfig

if TYPE_CHECKING:
    from mtr.broadcast import PublishInfo, WeightGroupInfo

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RankShare:
    """One rank's part of a data-parallel step."""

    indices: tuple[int, ...]  # positions in the step's sequence list
    normalizer: float  # loss divisor: all ranks' masked tokens / world_size
    micro_batches: int  # micro-batches every rank runs (the most any rank needs)
    masked_tokens: int  # this rank's masked tokens (weights its GRPO clip fraction and KL)


def split_by_tokens(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Indices per rank, balanced by token count: longest first, each to the rank with the fewest tokens so far.

    Ties go to the lower rank, so the split is deterministic. With fewer sequences than ranks some ranks get none.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    shards: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        shards[rank].append(index)
        load[rank] += lengths[index]
    return shards


def plan_step(
    sequences: Sequence[TrainSequence], world_size: int, budget_tokens: int, loss_agg_mode: str = "token-mean"
) -> list[RankShare]:
    """Split a step's sequences over `world_size` ranks with the global loss normalizer and micro-batch count."""
    lengths = [len(s.token_ids) for s in sequences]
    shards = split_by_tokens(lengths, world_size)
    total_masked = sum(sum(s.loss_mask) for s in sequences)
    if total_masked <= 0:
        raise ValueError("a training step needs at least one token with loss_mask 1")
    total = step_normalizer([s.loss_mask for s in sequences], loss_agg_mode)
    micro_batches = max(1, *(len(plan_micro_batches([lengths[i] for i in shard], budget_tokens)) for shard in shards))
    return [
        RankShare(
            indices=tuple(shard),
            normalizer=total / world_size,
            micro_batches=micro_batches,
            masked_tokens=sum(sum(sequences[i].loss_mask) for i in shard),
        )
        for shard in shards
    ]


def combine_results(results: Sequence[StepResult], shares: Sequence[RankShare], seconds: float) -> StepResult:
    """One StepResult for the whole step from the ranks' results (rank 0 first).

    Each rank's loss was divided by (global masked tokens / world_size), so their sum is world_size times the
    token-mean loss. The gradient norm is global already (DeepSpeed reduces it); rank 0's is taken. Clip
    fraction and KL are per-token means, so each rank's counts by its masked tokens.
    """
    if len(results) != len(shares) or not results:
        raise ValueError(f"combine_results: {len(results)} results for {len(shares)} ranks")
    masked = sum(s.masked_tokens for s in shares)
    clipped = sum(r.clip_fraction * s.masked_tokens for r, s in zip(results, shares, strict=True))
    kl = sum(r.kl * s.masked_tokens for r, s in zip(results, shares, strict=True))
    return StepResult(
        loss=sum(r.loss for r in results) / len(results),
        grad_norm=results[0].grad_norm,
        tokens=sum(r.tokens for r in results),
        seconds=seconds,
        clip_fraction=clipped / masked if masked else 0.0,
        learning_rate=results[0].learning_rate,
        kl=kl / masked if masked else 0.0,
    )


def create_learner(model_path: str | Path, config: LearnerConfig, total_steps: int) -> LearnerLike:
    """The learner `config.world_size` asks for: one in-process rank, or a Ray group of ranks."""
    if config.world_size == 1:
        from learner.engine import PolicyLearner

        return PolicyLearner(model_path, config, total_steps)
    return RayLearnerGroup(model_path, config, total_steps)


class _Rank:
    """Ray actor body: one PolicyLearner rank. Rank layout comes in `start`, before deepspeed is imported."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
        self.learner = None

    def node(self) -> tuple[str, str]:
        """(Ray node id, node IP) of this actor: ranks on one node rendezvous on loopback."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def free_port(self, host: str) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return sock.getsockname()[1]

    def start(self, model_path: str, config: dict, total_steps: int, layout: dict[str, str]) -> int:
        os.environ.update(layout)
        from learner.engine import PolicyLearner

        self.learner = PolicyLearner(model_path, LearnerConfig.model_validate(config), total_steps)
        return self.learner.vocab_size

    def step(
        self, grpo: bool, sequences: list[TrainSequence], share: RankShare, options: dict
    ) -> tuple[StepResult, int]:
        """`options`: grpo_step's keyword arguments (clip_eps, kl_coef, clip_eps_high, ...), empty for SFT."""
        if grpo:
            result = self.learner.grpo_step(
                sequences, **options, normalizer=share.normalizer, micro_batches=share.micro_batches
            )
        else:
            result = self.learner.sft_step(sequences, share.normalizer, share.micro_batches)
        return result, self.learner.version

    def set_learning_rate(self, lr: float | None) -> None:
        self.learner.set_learning_rate(lr)

    def on_weights(self, method: str, *args: Any) -> Any:
        """Rank 0 runs `method`; under ZeRO-3 the other ranks join the parameter gather it needs."""
        if self.learner.rank == 0:
            return getattr(self.learner, method)(*args)
        if self.learner.config.zero_stage == 3:
            for _ in self.learner.named_weights():
                pass
        return None

    def save_state(self, path: str) -> str:
        return str(self.learner.save_state(path))

    def load_state(self, path: str) -> int:
        return self.learner.load_state(path)


class RayLearnerGroup:
    """`config.world_size` PolicyLearner ranks in Ray actors, behaving as one learner (see module docstring).

    Needs a running Ray (or starts a local one on first use, as Ray does). `close()` ends the actors.
    """

    def __init__(
        self, model_path: str | Path, config: LearnerConfig, total_steps: int, start_timeout_s: float = 900.0
    ) -> None:
        self.config = config
        self._version = 0
        self._failure: str | None = None
        self._actors: list = []
        self._placement = None
        try:
            self._start(str(model_path), total_steps, start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _start(self, model_path: str, total_steps: int, timeout_s: float) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        size, cpus, gpus = self.config.world_size, self.config.num_cpus_per_rank, self.config.num_gpus_per_rank
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **self.config.resources}
        self._placement = placement_group([bundle] * size, strategy="PACK")
        try:
            ray.get(self._placement.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"learner group: cannot reserve {size} ranks of {bundle} within {timeout_s:.0f}s; "
                f"the cluster has {ray.cluster_resources()}"
            ) from None
        env = {"OMP_NUM_THREADS": str(max(1, int(cpus)))}
        if not gpus:
            env["DS_ACCELERATOR"] = "cpu"
        rank_actor = ray.remote(_Rank)
        for rank in range(size):
            strategy = PlacementGroupSchedulingStrategy(self._placement, placement_group_bundle_index=rank)
            options = {"num_cpus": cpus, "num_gpus": gpus, "scheduling_strategy": strategy}
            if self.config.resources:  # every rank holds its share of the custom resource that pins the group
                options["resources"] = dict(self.config.resources)
            self._actors.append(rank_actor.options(**options, runtime_env={"env_vars": env}).remote(env))
        layouts = self._layouts(self._gather([a.node.remote() for a in self._actors], "locate ranks", timeout_s))
        starts = [
            actor.start.remote(model_path, self.config.model_dump(), total_steps, layout)
            for actor, layout in zip(self._actors, layouts, strict=True)
        ]
        self.vocab_size = self._gather(starts, "start ranks", timeout_s)[0]

    def _layouts(self, nodes: list[tuple[str, str]]) -> list[dict[str, str]]:
        """Each rank's torch.distributed environment; rank 0's actor picks the rendezvous address and port.

        All ranks on one node meet on loopback; otherwise on rank 0's node IP. With GPUs each actor sees only
        its own device(s) (Ray sets CUDA_VISIBLE_DEVICES), so its local rank is 0; on CPU it is the rank's
        position among the ranks of its node.
        """
        import ray

        single_node = len({node_id for node_id, _ in nodes}) == 1
        address = LOOPBACK if single_node else nodes[0][1]
        port = ray.get(self._actors[0].free_port.remote(LOOPBACK if single_node else ""))
        layouts = []
        for rank, (node_id, _) in enumerate(nodes):
            local_rank = 0 if self.config.num_gpus_per_rank else sum(n == node_id for n, _ in nodes[:rank])
            layouts.append(
                {
                    "MASTER_ADDR": address,
                    "MASTER_PORT": str(port),
                    "RANK": str(rank),
                    "WORLD_SIZE": str(len(nodes)),
                    "LOCAL_RANK": str(local_rank),
                }
            )
        return layouts

    def _gather(self, refs: list, what: str, timeout_s: float | None = None) -> list:
        """Results of one call per rank, in rank order; the first failing rank's error is raised at once.

        A rank's ValueError/FileExistsError/LearnerError keeps its type (the servicer maps it to a status code),
        prefixed with the rank; anything else becomes a LearnerError. Waiting per result rather than for all
        means a rank that died does not leave the caller waiting on ranks stuck in a collective with it.
        """
        import ray

        position = {ref: rank for rank, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=timeout_s)
            if not ready:
                ranks = sorted(position[r] for r in pending)
                raise LearnerError(f"learner group: {what}: ranks {ranks} did not answer within {timeout_s:.0f}s")
            rank = position[ready[0]]
            try:
                results[rank] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, ValueError | FileExistsError | LearnerError):
                    raise type(cause)(f"rank {rank}: {cause}") from None
                message = f"learner group: {what} failed on rank {rank}: {type(cause).__name__}: {cause}"
                raise LearnerError(message) from exc
            except ray.exceptions.RayError as exc:
                raise LearnerError(f"learner group: {what}: rank {rank} is gone: {type(exc).__name__}: {exc}") from exc
        return results

    def _all(self, method: str, *args: Any) -> list:
        self._check_usable()
        return self._gather([getattr(a, method).remote(*args) for a in self._actors], method)

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise LearnerError(f"learner group is unusable after an earlier failure: {self._failure}")

    @property
    def version(self) -> int:
        """Optimizer steps taken (the same on every rank)."""
        return self._version

    @property
    def world_size(self) -> int:
        return self.config.world_size

    def set_learning_rate(self, lr: float | None) -> None:
        """Constant `lr` on every rank from the next step on; None returns to the schedule."""
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be positive and finite, got {lr}")
        self._all("set_learning_rate", lr)

    def sft_step(self, sequences: Sequence[TrainSequence]) -> StepResult:
        """One data-parallel optimizer step of token-mean NLL over all `sequences`."""
        validate_sequences(sequences, self.vocab_size, grpo=False)
        return self._step(False, sequences, {})

    def grpo_step(
        self,
        sequences: Sequence[TrainSequence],
        clip_eps: float | None = None,
        kl_coef: float = 0.0,
        *,
        clip_eps_high: float | None = None,
        loss_agg_mode: str = "token-mean",
        reset_optimizer: bool = False,
    ) -> StepResult:
        """One data-parallel optimizer step of the clipped GRPO objective (plus kl_coef × KL) over all `sequences`.

        The first step with `kl_coef` > 0 makes every rank take its reference from the current weights;
        `reset_optimizer` makes every rank clear its optimizer shard's moments first.
        """
        validate_sequences(sequences, self.vocab_size, grpo=True)
        low, high = resolve_clip(self.config.clip_eps, clip_eps, clip_eps_high)
        validate_kl_coef(kl_coef)
        step_normalizer([], loss_agg_mode)  # refuses an unknown mode here, not on every rank
        options = {
            "clip_eps": low,
            "kl_coef": kl_coef,
            "clip_eps_high": high,
            "loss_agg_mode": loss_agg_mode,
            "reset_optimizer": reset_optimizer,
        }
        return self._step(True, sequences, options)

    def _step(self, grpo: bool, sequences: Sequence[TrainSequence], options: dict) -> StepResult:
        """Validated up front, so no rank refuses its part while the others wait for it in a collective."""
        self._check_usable()
        start = time.perf_counter()
        mode = options.get("loss_agg_mode", "token-mean")
        shares = plan_step(sequences, self.world_size, self.config.micro_batch_tokens, mode)
        refs = [
            actor.step.remote(grpo, [sequences[i] for i in share.indices], share, options)
            for actor, share in zip(self._actors, shares, strict=True)
        ]
        try:
            answers = self._gather(refs, "training step")
        except Exception as exc:
            self._failure = f"step {self._version + 1}: {exc}"
            raise
        self._version = answers[0][1]
        return combine_results([result for result, _ in answers], shares, time.perf_counter() - start)

    def _on_weights(self, method: str, *args: Any) -> Any:
        """Rank 0 answers; only ZeRO-3 needs the other ranks (to gather the partitioned weights)."""
        self._check_usable()
        actors = self._actors if self.config.zero_stage == 3 else self._actors[:1]
        return self._gather([a.on_weights.remote(method, *args) for a in actors], method)[0]

    def checksum(self, dtype: str = "bfloat16") -> str:
        return self._on_weights("checksum", dtype)

    def save_hf(self, path: str | Path) -> Path:
        """Rank 0 writes the Hugging Face checkpoint (it must be storage the caller can read)."""
        return Path(self._on_weights("save_hf", str(path)))

    def publish(self, version: int, broadcast: str) -> PublishInfo:
        """Rank 0 publishes: the weights are in its process, and it owns the published objects."""
        return self._on_weights("publish", version, broadcast)

    def open_weight_group(self, receivers: int, host: str) -> WeightGroupInfo:
        """Rank 0 opens it: the staged weights are in its process."""
        return self._rank0("open_weight_group", receivers, host)

    def send_weights(self, version: int) -> PublishInfo:
        return self._rank0("send_weights", version)

    def _rank0(self, method: str, *args: Any) -> Any:
        """Rank 0 alone, even under ZeRO-3: what it needs was gathered when the weights were published."""
        self._check_usable()
        return self._gather([self._actors[0].on_weights.remote(method, *args)], method)[0]

    def save_state(self, path: str | Path) -> Path:
        """Every rank writes its part (optimizer shard, RNG; rank 0 the KL reference) under `path`, which all
        ranks must see."""
        return Path(self._all("save_state", str(path))[0])

    def load_state(self, path: str | Path) -> int:
        versions = self._all("load_state", str(path))
        if len(set(versions)) != 1:
            self._failure = f"ranks restored different versions {versions} from {path}"
            raise LearnerError(f"learner group: {self._failure}")
        self._version = versions[0]
        return self._version

    def close(self) -> None:
        """End the rank actors and free their placement group; safe to call twice."""
        if not self._actors and self._placement is None:
            return
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._placement is not None:
            remove_placement_group(self._placement)
            self._placement = None
