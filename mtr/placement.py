"""Placement of service roles on a Ray cluster: one generic host actor per role instance, owned here.

The controller never imports a service package. It asks Ray for a `ServiceHost` actor with the resources
the role needs (CPUs, GPUs, or a custom resource that pins it to certain nodes) and names the role's entry
point as text ("rollout.host:start"); the host imports it inside the actor's own process, starts the
role's gRPC server and hands back its address. Everything after that goes over gRPC.

    controller ──ray──▶ ServiceHost(rollout.host:start)   ──▶ vLLM engine + RolloutService   @ host:port
               ──ray──▶ ServiceHost(learner.host:start)   ──▶ DeepSpeed engine + LearnerService @ host:port
               ──ray──▶ ServiceHost(simulator.host:start) ×N ──▶ SimulatorService (farm placement 'ray')
               ──grpc─▶ every address

Which address a service binds is one parameter, `host`, that every entry point takes: loopback for a local
run, or `NODE_IP`, which the host actor turns into the IP of the node Ray placed it on, so that roles on
other nodes (and the controller) can reach it. Servers a role starts besides gRPC (metrics) reuse it.
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
NODE_IP = "node"  # RoleSpec.host: bind the IP of whichever node Ray places the role on


class RoleStartError(RuntimeError):
    """A role's actor died or failed while starting; the message names the role and Ray's reason."""


@dataclass(frozen=True)
class RoleSpec:
    entry: str
    kwargs: dict
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    host: str = LOOPBACK
    label: str = ""

    @property
    def name(self) -> str:
        """What errors and the Ray dashboard call this instance ("simulator-2"; default: the role's package)."""
        return self.label or self.entry.partition(".")[0]


def bind_address(host: str) -> str:
    """`host` as a bind address: NODE_IP becomes this node's IP (bracketed if IPv6), anything else stays."""
    if host != NODE_IP:
        return host
    import ray

    ip = ray.util.get_node_ip_address()
    return f"[{ip}]" if ":" in ip else ip


class ServiceHost:
    """Ray actor body: imports a role's entry point and keeps the started service alive."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
        # Ray leaves an actor's root logger at WARNING: the services' progress lines (agent-loop turns, weight
        # loads) would never reach the driver's terminal.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self._service = None

    def start(self, entry: str, kwargs: dict, host: str = LOOPBACK) -> str:
        module_name, _, function_name = entry.partition(":")
        start = getattr(importlib.import_module(module_name), function_name)
        self._service = start(**kwargs, host=bind_address(host))
        return self._service.address

    def call(self, method: str, *args):
        """Local (non-gRPC) hooks a role exposes for tests and diagnostics."""
        return getattr(self._service, method)(*args)

    def metrics_address(self) -> str | None:
        """host:port of the role's Prometheus endpoint, if it serves one (for scrape-target discovery)."""
        return getattr(self._service, "metrics_address", None)

    def node(self) -> tuple[str, str]:
        """(Ray node id, node IP) of this actor; also a liveness probe: it fails once the actor is dead."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None


def check_resources(spec: RoleSpec) -> None:
    """Fail with the numbers instead of waiting forever for an actor the cluster can never place."""
    import logging

    import ray

    total = ray.cluster_resources()
    free = ray.available_resources()
    for name, wanted in (("CPU", spec.num_cpus), ("GPU", spec.num_gpus), *spec.resources.items()):
        if wanted and wanted > total.get(name, 0.0):
            raise RuntimeError(
                f"{spec.name} ({spec.entry}) needs {wanted:g} {name} but the Ray cluster has {total.get(name, 0.0):g} "
                f"in all ({free.get(name, 0.0):g} free); lower the role's reservation or give the cluster more "
                "(cluster.num_cpus sets a local instance's logical CPUs; `ray start --resources` a node's custom ones)"
            )
        if wanted and wanted > free.get(name, 0.0):
            logging.getLogger("mtr.placement").warning(
                "%s wants %g %s and only %g are free: it will wait until other roles release them",
                spec.name,
                wanted,
                name,
                free.get(name, 0.0),
            )


def launch_all(specs: list[RoleSpec], timeout_s: float | None = None) -> list[tuple[object, str]]:
    """Create every spec's host actor, start all services concurrently; returns [(actor, gRPC address)].

    If any fails (or is not serving within `timeout_s`), every actor created here is killed and the error names
    the role instance that failed.
    """
    import ray

    actors = [_create(spec) for spec in specs]
    starts = [actor.start.remote(spec.entry, spec.kwargs, spec.host) for actor, spec in zip(actors, specs, strict=True)]
    try:
        addresses = [_started(ref, spec, timeout_s) for ref, spec in zip(starts, specs, strict=True)]
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        raise
    return list(zip(actors, addresses, strict=True))


def launch(spec: RoleSpec):
    """Create the host actor for `spec` and start its service; returns (actor handle, gRPC address)."""
    return launch_all([spec])[0]


def _create(spec: RoleSpec):
    import ray

    threads = str(max(1, os.cpu_count() or 1))
    env = {"OMP_NUM_THREADS": threads, **spec.env}
    # A unique name shows the instance in the Ray dashboard and `ray list actors` without clashing across runs.
    return (
        ray.remote(ServiceHost)
        .options(
            name=f"{spec.name}-{uuid.uuid4().hex[:8]}",
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            resources=spec.resources or None,
            runtime_env={"env_vars": env},
        )
        .remote(env)
    )


def _started(ref, spec: RoleSpec, timeout_s: float | None) -> str:
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise RoleStartError(
            f"{spec.name} ({spec.entry}) is not serving after {timeout_s:.0f}s: it may still be waiting for a node "
            f"with {spec.num_cpus:g} CPU, {spec.num_gpus:g} GPU and {spec.resources or 'no custom resources'} "
            f"(cluster: {ray.cluster_resources()})"
        ) from None
    except ray.exceptions.RayActorError as error:
        raise RoleStartError(f"{spec.name} ({spec.entry}) died while starting: {error}") from None
    except ray.exceptions.RayTaskError as error:
        raise RoleStartError(f"{spec.name} ({spec.entry}) failed to start: {error}") from None


def shutdown(actor) -> None:
    import ray

    try:
        ray.get(actor.stop.remote(), timeout=30)
    finally:
        ray.kill(actor)
