"""The running parts a command needs, started in a safe order and stopped in reverse.

Every command (`mtr run`, `synth`, `sft`, `eval`) needs some of: the simulator farm (local processes), Ray
(local or an existing cluster), a simulator client, and role actors (learner, rollout) placed on Ray and
reached over gRPC. Ray starts before any gRPC channel of ours exists: `ray.init` forks its daemons, and
gRPC's threads must not be running then (seen: "Other threads are currently calling into gRPC, skipping
fork() handlers", then a raylet timeout).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller.rolloutpool import RolloutPool
from controller.simfarm import LocalSimulatorFarm
from mtr.config import RunConfig
from mtr.placement import RoleSpec, launch, shutdown
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.simclient import SimulatorClient

log = logging.getLogger("mtr.services")


class Services:
    """Owns the farm, Ray (if it started it), the simulator client and every role actor it launched."""

    def __init__(self, config: RunConfig, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.simulator: SimulatorClient | None = None
        self.simulator_addresses: list[str] = []
        self._farm: LocalSimulatorFarm | None = None
        self._started_ray = False
        self._actors: list = []

    def start(self, *, ray: bool = True, simulator: bool = True) -> Services:
        if simulator:
            self._farm = LocalSimulatorFarm(self.config.simulator, self.config.world.seed, self.log_dir)
            self.simulator_addresses = self._farm.start()
        if ray:
            self._start_ray()
        if simulator:
            timeout_s = self.config.simulator.call_timeout_s
            self.simulator = SimulatorClient(self.simulator_addresses, timeout_s=timeout_s)
            self.simulator.wait_ready(60)
        return self

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        cluster = self.config.cluster
        if cluster.ray_address:
            ray.init(address=cluster.ray_address, namespace="mtr")
        else:
            ray.init(num_cpus=cluster.num_cpus, namespace="mtr", include_dashboard=False)
        self._started_ray = True

    # -- roles ------------------------------------------------------------------------------------------------
    def launch(self, spec: RoleSpec):
        """Place a role on Ray; returns (actor, gRPC address). The actor is stopped by `stop_role` or `close`."""
        self._check_resources(spec)
        actor, address = launch(spec)
        self._actors.append(actor)
        log.info("%s serving at %s", spec.entry, address)
        return actor, address

    def _check_resources(self, spec: RoleSpec) -> None:
        """Fail with the numbers instead of waiting forever for an actor the cluster can never place."""
        import ray

        total = ray.cluster_resources()
        free = ray.available_resources()
        for name, wanted in (("CPU", spec.num_cpus), ("GPU", spec.num_gpus), *spec.resources.items()):
            if wanted and wanted > total.get(name, 0.0):
                raise RuntimeError(
                    f"{spec.entry} needs {wanted:g} {name} but the Ray cluster has {total.get(name, 0.0):g} in all "
                    f"({free.get(name, 0.0):g} free); lower the role's reservation or give the cluster more "
                    "(cluster.num_cpus sets a local instance's logical CPUs)"
                )
            if wanted and wanted > free.get(name, 0.0):
                log.warning(
                    "%s wants %g %s and only %g are free: it will wait until other roles release them",
                    spec.entry,
                    wanted,
                    name,
                    free.get(name, 0.0),
                )

    def stop_role(self, actor) -> None:
        self._actors.remove(actor)
        shutdown(actor)

    def rollout(self, model_path: str, initial_version: int = 0) -> tuple[object, RolloutClient]:
        """A rollout worker (vLLM engine + RolloutService) on `model_path`, wired to the simulator farm."""
        rollout = self.config.rollout
        spec = RoleSpec(
            "rollout.host:start",
            {
                "model_path": model_path,
                "rollout": self.config.rollout.model_dump(),
                "dtype": self.config.model.dtype,
                "seed": self.config.seed,
                "simulator_addresses": self.simulator_addresses,
                "simulator_timeout_s": self.config.simulator.call_timeout_s,
                "initial_version": initial_version,
            },
            num_cpus=rollout.num_cpus_per_worker,
            num_gpus=rollout.num_gpus_per_worker,
        )
        actor, address = self.launch(spec)
        return actor, RolloutClient(address)

    def rollout_pool(self, model_path: str, initial_version: int = 0) -> tuple[list, RolloutPool]:
        """`rollout.workers` rollout workers on `model_path` behind one RolloutPool."""
        workers = self.config.rollout.workers
        with ThreadPoolExecutor(max_workers=workers) as threads:  # engines start (and compile) concurrently
            started = list(threads.map(lambda _: self.rollout(model_path, initial_version), range(workers)))
        return [actor for actor, _ in started], RolloutPool([client for _, client in started])

    def learner(self, model_path: str, total_steps: int) -> tuple[object, LearnerClient]:
        """The learner (DeepSpeed, `learner.world_size` ranks) behind LearnerService."""
        learner = self.config.learner
        # With several ranks the host only serves gRPC; each rank actor reserves its own CPUs/GPUs.
        host_cpus = learner.num_cpus_per_rank if learner.world_size == 1 else 0.0
        spec = RoleSpec(
            "learner.host:start",
            {"model_path": model_path, "learner": learner.model_dump(), "total_steps": max(1, total_steps)},
            num_cpus=host_cpus,
            num_gpus=learner.num_gpus_per_rank if learner.world_size == 1 else 0.0,
        )
        actor, address = self.launch(spec)
        return actor, LearnerClient(address)

    # -- teardown ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        for actor in reversed(self._actors):
            try:
                shutdown(actor)
            except Exception as error:  # noqa: BLE001 - keep tearing down the rest; say what failed
                log.warning("could not stop an actor cleanly: %s", error)
        self._actors = []
        if self.simulator is not None:
            self.simulator.close()
            self.simulator = None
        if self._farm is not None:
            self._farm.stop()
            self._farm = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
