"""Placement of service roles on a Ray cluster: one generic host actor per role instance, owned here.

The controller never imports a service package. It asks Ray for a `ServiceHost` actor with the resources
the role needs (CPUs, GPUs, or a custom resource that pins it to certain nodes) and names the role's entry
point as text ("rollout.host:start"); the host imports it inside the actor's own process, starts the
role's gRPC server and hands back its address. Everything after that goes over gRPC.

    controller ──ray──▶ ServiceHost(rollout.host:start) ──▶ vLLM engine + RolloutService @ host:port
               ──ray──▶ ServiceHost(learner.host:start)  ──▶ DeepSpeed engine + LearnerService @ host:port
               ──grpc─▶ both addresses
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RoleSpec:
    entry: str
    kwargs: dict
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class ServiceHost:
    """Ray actor body: imports a role's entry point and keeps the started service alive."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
        self._service = None

    def start(self, entry: str, kwargs: dict) -> str:
        module_name, _, function_name = entry.partition(":")
        start = getattr(importlib.import_module(module_name), function_name)
        self._service = start(**kwargs)
        return self._service.address

    def call(self, method: str, *args):
        """Local (non-gRPC) hooks a role exposes for tests and diagnostics."""
        return getattr(self._service, method)(*args)

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None


def launch(spec: RoleSpec):
    """Create the host actor for `spec` and start its service; returns (actor handle, gRPC address)."""
    import ray

    threads = str(max(1, os.cpu_count() or 1))
    env = {"OMP_NUM_THREADS": threads, **spec.env}
    actor = (
        ray.remote(ServiceHost)
        .options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            resources=spec.resources or None,
            runtime_env={"env_vars": env},
        )
        .remote(env)
    )
    address = ray.get(actor.start.remote(spec.entry, spec.kwargs))
    return actor, address


def shutdown(actor) -> None:
    import ray

    try:
        ray.get(actor.stop.remote(), timeout=30)
    finally:
        ray.kill(actor)
