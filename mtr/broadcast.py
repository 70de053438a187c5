"""Weight broadcast from the learner to rollout workers: an interface, a Ray object-store variant, a local one.

The learner publishes packed Hugging Face-named tensors under a version; each rollout worker fetches the
version the controller tells it to load. The Ray variant keeps the tensors in the object store (works
across nodes; the learner owns the objects) and a small named registry actor maps versions to object refs,
so neither side needs the other's handle. An NCCL collective variant for GPU clusters fits the same interface.
Ray is imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mtr.weights import PackedTensor, pack_state_dict

REGISTRY_NAME = "mtr-weight-registry"
REGISTRY_NAMESPACE = "mtr"


@dataclass(frozen=True)
class PublishInfo:
    version: int
    seconds: float
    bytes: int


class WeightBroadcast(Protocol):
    def publish(self, version: int, named_tensors: Iterable, dtype: str = "bfloat16") -> PublishInfo: ...

    def fetch(self, version: int) -> list[PackedTensor]: ...


class InProcessBroadcast:
    """Same contract without Ray, for unit tests and single-process tools."""

    def __init__(self, keep: int = 2) -> None:
        self._versions: dict[int, list[PackedTensor]] = {}
        self._keep = keep

    def publish(self, version: int, named_tensors: Iterable, dtype: str = "bfloat16") -> PublishInfo:
        start = time.perf_counter()
        packed = pack_state_dict(named_tensors, dtype=dtype)
        self._versions[version] = packed
        for old in sorted(self._versions)[: -self._keep]:
            del self._versions[old]
        return PublishInfo(version, time.perf_counter() - start, sum(len(p.data) for p in packed))

    def fetch(self, version: int) -> list[PackedTensor]:
        if version not in self._versions:
            raise KeyError(f"weights version {version} was never published (have {sorted(self._versions)})")
        return self._versions[version]


class _Registry:
    """Named Ray actor: version -> [ObjectRef]. Refs are wrapped in a list so Ray does not resolve them."""

    def __init__(self, keep: int) -> None:
        self._refs: dict[int, list] = {}
        self._keep = keep

    def put(self, version: int, wrapped_ref: list) -> None:
        self._refs[version] = wrapped_ref
        for old in sorted(self._refs)[: -self._keep]:
            del self._refs[old]

    def get(self, version: int) -> list | None:
        return self._refs.get(version)

    def versions(self) -> list[int]:
        return sorted(self._refs)


class RayObjectStoreBroadcast:
    def __init__(self, keep: int = 2) -> None:
        import ray

        self._ray = ray
        self._registry = (
            ray.remote(num_cpus=0)(_Registry)
            .options(name=REGISTRY_NAME, namespace=REGISTRY_NAMESPACE, get_if_exists=True, lifetime=None)
            .remote(keep)
        )

    def publish(self, version: int, named_tensors: Iterable, dtype: str = "bfloat16") -> PublishInfo:
        start = time.perf_counter()
        packed = pack_state_dict(named_tensors, dtype=dtype)
        ref = self._ray.put(packed)
        self._ray.get(self._registry.put.remote(version, [ref]))
        return PublishInfo(version, time.perf_counter() - start, sum(len(p.data) for p in packed))

    def fetch(self, version: int) -> list[PackedTensor]:
        wrapped = self._ray.get(self._registry.get.remote(version))
        if wrapped is None:
            known = self._ray.get(self._registry.versions.remote())
            raise KeyError(f"weights version {version} is not in the object store (have {known})")
        return self._ray.get(wrapped[0])


def create_broadcast(kind: str) -> WeightBroadcast:
    if kind == "ray":
        return RayObjectStoreBroadcast()
    if kind == "local":
        return InProcessBroadcast()
    raise ValueError(f"unknown weight broadcast {kind!r} (expected 'ray' or 'local')")
