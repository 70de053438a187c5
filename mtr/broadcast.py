"""Weight broadcast from the learner to rollout workers: an interface; object-store, collective and local variants.

The learner publishes packed Hugging Face-named tensors under a version; each rollout worker fetches the
version the controller tells it to load. The Ray variant keeps the tensors in the object store in buckets of
`bucket_bytes` (works across nodes; the learner owns the objects; neither end holds more than about a bucket
beyond its weights) and a small named registry actor maps versions to the buckets' object refs, so neither
side needs the other's handle. The collective variant stages a version on the learner and broadcasts it to
a group of the learner and every rollout engine (NCCL on GPUs, gloo on CPU; `mtr.weightgroup`).
Ray and torch are imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from mtr.weights import PackedTensor, pack_buckets, pack_state_dict

REGISTRY_NAME = "mtr-weight-registry"
REGISTRY_NAMESPACE = "mtr"
DEFAULT_BUCKET_BYTES = 64 << 20


@dataclass(frozen=True)
class WeightGroupInfo:
    """Where the rollout workers join a collective weight group, and on what terms."""

    address: str
    backend: str
    world_size: int
    timeout_s: float


@dataclass(frozen=True)
class PublishInfo:
    version: int
    seconds: float
    bytes: int
    buckets: int = 1
    # Values of the published weights (in the served dtype) that differ from the previous publish, out of
    # `values` (filled in by the learner, which keeps the previous version; 0/0 when nobody counted).
    changed: int = 0
    values: int = 0


class WeightBroadcast(Protocol):
    def publish(
        self, version: int, named_tensors: Iterable, dtype: str = "bfloat16", private: bool = False
    ) -> PublishInfo:
        """`private`: the tensors are copies nobody changes afterwards, which packing may view, not copy."""
        ...

    def fetch(self, version: int) -> Iterable[PackedTensor]:
        """The tensors of `version`, in publish order; raises KeyError at once when it was never published."""
        ...


class InProcessBroadcast:
    """Same contract without Ray, for unit tests and single-process tools."""

    def __init__(self, keep: int = 2) -> None:
        self._versions: dict[int, list[PackedTensor]] = {}
        self._keep = keep

    def publish(
        self, version: int, named_tensors: Iterable, dtype: str = "bfloat16", private: bool = False
    ) -> PublishInfo:
        start = time.perf_counter()
        packed = pack_state_dict(named_tensors, dtype=dtype, copy=not private)
        self._versions[version] = packed
        for old in sorted(self._versions)[: -self._keep]:
            del self._versions[old]
        return PublishInfo(version, time.perf_counter() - start, sum(len(p.data) for p in packed))

    def fetch(self, version: int) -> list[PackedTensor]:
        if version not in self._versions:
            raise KeyError(f"weights version {version} was never published (have {sorted(self._versions)})")
        return self._versions[version]


class _Registry:
    """Named Ray actor: version -> the ObjectRefs of its buckets. Refs inside a list are not resolved by Ray."""

    def __init__(self, keep: int) -> None:
        self._refs: dict[int, list] = {}
        self._keep = keep

    def put(self, version: int, bucket_refs: list) -> None:
        self._refs[version] = bucket_refs
        for old in sorted(self._refs)[: -self._keep]:
            del self._refs[old]

    def get(self, version: int) -> list | None:
        return self._refs.get(version)

    def versions(self) -> list[int]:
        return sorted(self._refs)


def weight_registry(keep: int = 2, name: str = REGISTRY_NAME):
    """The named registry actor, created by the first caller. Ray ends a (non-detached) actor with the process
    that created it, so the controller calls this before it starts a learner or a rollout worker: were a rollout
    worker first, the registry would die with that worker, and with it every later weight sync."""
    import ray

    return (
        ray.remote(num_cpus=0)(_Registry)
        .options(name=name, namespace=REGISTRY_NAMESPACE, get_if_exists=True, lifetime=None)
        .remote(keep)
    )


class RayObjectStoreBroadcast:
    def __init__(self, keep: int = 2, bucket_bytes: int = DEFAULT_BUCKET_BYTES, registry: str = REGISTRY_NAME) -> None:
        """`registry` names the Ray actor that maps versions to buckets; publisher and readers must agree on it."""
        import ray

        if bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        self._ray = ray
        self._bucket_bytes = bucket_bytes
        self._registry = weight_registry(keep, registry)

    def publish(
        self, version: int, named_tensors: Iterable, dtype: str = "bfloat16", private: bool = False
    ) -> PublishInfo:
        """Pack and put one bucket at a time, then register the version once every bucket is in the store."""
        start = time.perf_counter()
        refs, size = [], 0
        for bucket in pack_buckets(named_tensors, self._bucket_bytes, dtype=dtype, copy=not private):
            refs.append(self._ray.put(bucket))
            size += sum(len(p.data) for p in bucket)
        self._ray.get(self._registry.put.remote(version, refs))
        return PublishInfo(version, time.perf_counter() - start, size, len(refs))

    def fetch(self, version: int) -> Iterator[PackedTensor]:
        refs = self._ray.get(self._registry.get.remote(version))
        if refs is None:
            known = self._ray.get(self._registry.versions.remote())
            raise KeyError(f"weights version {version} is not in the object store (have {known})")
        return self._stream(refs)

    def _stream(self, refs: list) -> Iterator[PackedTensor]:
        """Bucket by bucket, so a rollout host holds one fetched bucket at a time."""
        for ref in refs:
            bucket = self._ray.get(ref)
            yield from bucket
            del bucket


class CollectiveBroadcast:
    """The sender's side of a collective weight group (`mtr.weightgroup`): `publish` stages a version, and
    `send` broadcasts it once the controller has every rollout worker receiving (LoadWeights).

    Receivers take weights from the group inside their engines, not through `fetch`.
    """

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES, timeout_s: float = 600.0, device: str = "cpu"):
        self._bucket_bytes = bucket_bytes
        self._timeout_s = timeout_s
        self._device = device
        self._pending = None  # PendingGroup once opened
        self._staged = None  # StagedWeights of the last publish
        # Staging refills the last staged version's buffers, so it must not run while that version is sent.
        self._staging_lock = threading.Lock()

    def open(self, receivers: int, host: str) -> WeightGroupInfo:
        """Open the group on `host` for `receivers` ranks; asked again for as many, the same group."""
        from mtr.weightgroup import WeightGroup, backend_for

        if self._pending is not None:
            if self._pending.world_size != receivers + 1:
                raise ValueError(
                    f"this learner's weight group at {self._pending.address} has {self._pending.world_size - 1} "
                    f"receivers; it cannot be reopened for {receivers}"
                )
        else:
            backend = backend_for(self._device)
            self._pending = WeightGroup.create(host, receivers + 1, backend, self._timeout_s, self._device)
        pending = self._pending
        return WeightGroupInfo(pending.address, pending.backend, pending.world_size, self._timeout_s)

    def publish(
        self, version: int, named_tensors: Iterable, dtype: str = "bfloat16", private: bool = False
    ) -> PublishInfo:
        """Stages into the group's own buffers (a copy either way, so `private` changes nothing here)."""
        from mtr.weightgroup import stage

        start = time.perf_counter()
        with self._staging_lock:
            self._staged = stage(version, named_tensors, dtype, self._bucket_bytes, self._device, reuse=self._staged)
        return PublishInfo(version, time.perf_counter() - start, self._staged.bytes, len(self._staged.buffers))

    def send(self, version: int) -> PublishInfo:
        """Broadcast the staged `version`; returns when every receiver has it."""
        if self._pending is None:
            raise ValueError("no weight group is open: call OpenWeightGroup first")
        group = self._pending.wait()
        with self._staging_lock:
            staged = self._staged
            if staged is None or staged.version != version:
                held = "nothing" if staged is None else f"version {staged.version}"
                message = f"weights version {version} was not published; the learner has {held} staged"
                group.send_error(message)  # the receivers are waiting in LoadWeights: release them with the reason
                raise ValueError(message)
            start = time.perf_counter()
            sent = group.send(staged)
        return PublishInfo(version, time.perf_counter() - start, sent, len(staged.buffers))

    def fetch(self, version: int) -> list[PackedTensor]:
        raise NotImplementedError("collective weights are received inside the rollout engine, not fetched")


def create_broadcast(
    kind: str, bucket_bytes: int = DEFAULT_BUCKET_BYTES, timeout_s: float = 600.0, device: str = "cpu"
) -> WeightBroadcast:
    if kind == "collective":
        return CollectiveBroadcast(bucket_bytes, timeout_s, device)
    if kind == "ray":
        return RayObjectStoreBroadcast(bucket_bytes=bucket_bytes)
    if kind == "local":
        return InProcessBroadcast()
    raise ValueError(f"unknown weight broadcast {kind!r} (expected 'ray', 'collective' or 'local')")
