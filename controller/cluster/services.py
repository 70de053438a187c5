"""The running parts a command needs, started in a safe order and stopped in reverse.

Every command (`mtr run`, `synth`, `sft`, `eval`) needs some of: the simulator farm (local processes, Ray
actors or external replicas: controller/cluster/farm.py), Ray (local or an existing cluster), a simulator client, and
role actors (learner, rollout) placed on Ray and reached over gRPC. On a cluster every role binds and
advertises its node's IP (mtr.placement.NODE_IP); a local run keeps everything on loopback.

Ray starts before any gRPC channel of ours exists: `ray.init` forks its daemons, and gRPC's threads must not
be running then (seen: "Other threads are currently calling into gRPC, skipping fork() handlers", then a
raylet timeout).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller.cluster.farm import SimulatorFarm, create_farm
from controller.cluster.raystart import start_local_ray
from controller.cluster.rolloutpool import RolloutPool
from controller.reports.metricstargets import MetricsTargets
from mtr.broadcast import weight_registry
from mtr.config import LearnerConfig, RunConfig
from mtr.placement import LOOPBACK, NODE_IP, RoleSpec, check_resources, launch, shutdown
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.simclient import SimulatorClient

log = logging.getLogger("mtr.services")


class Services:
    """Owns the farm, Ray (if it started it), the simulator client and every role actor it launched."""

    def __init__(self, config: RunConfig, log_dir: Path, targets: MetricsTargets | None = None) -> None:
        """With `targets`, every service started here is listed there (its /metrics) for Prometheus discovery."""
        self.config = config
        self.log_dir = log_dir
        self.targets = targets
        self._listed: dict[int, str] = {}  # id(actor) -> its name in `targets`
        self.simulator: SimulatorClient | None = None
        self.simulator_addresses: list[str] = []
        self._farm: SimulatorFarm | None = None
        self._started_ray = False
        self._actors: list = []
        self._weight_registry = None  # the weight broadcast's registry actor, owned by this process
        self._registry_lock = threading.Lock()
        # Where role services bind: other nodes must reach them on a cluster; nothing else should locally.
        self.host = NODE_IP if config.cluster.ray_address else LOOPBACK

    def start(self, *, ray: bool = True, simulator: bool = True) -> Services:
        ensure_reaper()  # whatever ends this process, what it starts here does not outlive it
        try:
            if simulator and self.config.simulator_placement == "ray":
                self._start_ray()
            if simulator:
                self._farm = create_farm(self.config, self.log_dir, self.host)
                self.simulator_addresses = self._farm.start()
                self._list_simulators()
            if ray:
                self._start_ray()
            if simulator:
                timeout_s = self.config.simulator.call_timeout_s
                self.simulator = SimulatorClient(self.simulator_addresses, timeout_s=timeout_s)
                self.simulator.wait_ready(timeout_s)  # replicas we started are ready; others get call_timeout_s
        except BaseException:
            self.close()
            raise
        return self

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        cluster = self.config.cluster
        if cluster.ray_address:
            check_reachable(cluster.ray_address, cluster.connect_timeout_s)
            ray.init(address=cluster.ray_address, namespace="mtr")
        else:
            start_local_ray(num_cpus=cluster.num_cpus, namespace="mtr")
        self._started_ray = True
        # ray.init installs a SIGTERM handler that exits at once; keep SIGTERM acting as Ctrl-C (the mtr CLI's
        # choice), so `finally` blocks still write what they have and stop what was started.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) not in (
            signal.SIG_DFL,
            signal.SIG_IGN,
            None,
        ):
            signal.signal(signal.SIGTERM, signal.default_int_handler)

    # -- roles ------------------------------------------------------------------------------------------------
    def launch(self, spec: RoleSpec):
        """Place a role on Ray; returns (actor, gRPC address). The actor is stopped by `stop_role` or `close`."""
        check_resources(spec)
        with self._registry_lock:  # rollout workers launch from several threads; one registry, held here
            if self._weight_registry is None:  # owned here: losing a rollout worker does not take it along
                self._weight_registry = weight_registry()
        actor, address = launch(spec)
        self._actors.append(actor)
        self._list_role(actor, spec)
        log.info("%s serving at %s", spec.entry, address)
        return actor, address

    def stop_role(self, actor) -> None:
        self._actors.remove(actor)
        if actor_name := self._listed.pop(id(actor), None):
            self.targets.remove(actor_name)
        shutdown(actor)

    def rollout(
        self, model_path: str, initial_version: int = 0, worker: str = "rollout-0", initial_adapter: str | None = None
    ) -> tuple[object, RolloutClient]:
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
                "worker": worker,
                "lora": adapter_sync(self.config),
                "initial_adapter": initial_adapter,
            },
            num_cpus=rollout.num_cpus_per_worker,
            num_gpus=rollout.num_gpus_per_worker,
            resources=dict(rollout.resources),
            host=self.host,
        )
        actor, address = self.launch(spec)
        return actor, RolloutClient(address)

    def rollout_pool(
        self, model_path: str, initial_version: int = 0, initial_adapter: str | None = None
    ) -> tuple[list, RolloutPool]:
        """`rollout.workers` rollout workers on `model_path` (plus `initial_adapter`) behind one RolloutPool."""
        workers = self.config.rollout.workers
        with ThreadPoolExecutor(max_workers=workers) as threads:  # engines start (and compile) concurrently
            started = list(
                threads.map(
                    lambda i: self.rollout(model_path, initial_version, f"rollout-{i}", initial_adapter), range(workers)
                )
            )
        return [actor for actor, _ in started], RolloutPool([client for _, client in started])

    def learner(
        self, model_path: str, total_steps: int, learner: LearnerConfig | None = None
    ) -> tuple[object, LearnerClient]:
        """The learner (DeepSpeed, `learner.world_size` ranks) behind LearnerService; `learner` replaces the
        run's learner settings (a benchmark comparing two of them in one run)."""
        learner = learner or self.config.learner
        # With several ranks the host only serves gRPC; each rank actor reserves its own CPUs/GPUs.
        host_cpus = learner.num_cpus_per_rank if learner.world_size == 1 else 0.0
        spec = RoleSpec(
            "learner.host:start",
            {"model_path": model_path, "learner": learner.model_dump(), "total_steps": max(1, total_steps)},
            num_cpus=host_cpus,
            num_gpus=learner.num_gpus_per_rank if learner.world_size == 1 else 0.0,
            resources=dict(learner.resources) if learner.world_size == 1 else {},  # a group: its ranks hold them
            host=self.host,
        )
        actor, address = self.launch(spec)
        return actor, LearnerClient(address)

    # -- metrics discovery ------------------------------------------------------------------------------------
    def _list_simulators(self) -> None:
        """List each replica's /metrics as replica-<i> (a farm whose replicas serve none lists nothing)."""
        if self.targets is not None:
            for index, address in enumerate(getattr(self._farm, "metrics_addresses", [])):
                self.targets.add("simulator", f"replica-{index}", address)

    def _list_role(self, actor, spec: RoleSpec) -> None:
        """List a role's /metrics under its role ("rollout.host:start" -> rollout) and name (worker or role)."""
        if self.targets is None:
            return
        import ray

        address = ray.get(actor.metrics_address.remote(), timeout=60)
        if address:
            role = spec.entry.partition(".")[0]
            self._listed[id(actor)] = self.targets.add(role, spec.kwargs.get("worker", role), address).service

    def _unlist_all(self) -> None:
        """Before stopping: a finished run must not leave targets behind that the dead-replica alert finds."""
        if self.targets is not None:
            for target in self.targets.targets():
                if target.role != "controller":
                    self.targets.remove(target.service)
        self._listed = {}

    # -- teardown ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._unlist_all()
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
        self._weight_registry = None

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ClusterUnreachableError(RuntimeError):
    pass


def check_reachable(ray_address: str, timeout_s: float) -> None:
    """Fail within `timeout_s`, naming the address as given, when the cluster's head does not accept a TCP
    connection (`ray.init` would retry for minutes, deaf to SIGTERM). 'auto' is left to Ray to find."""
    import socket

    if ray_address == "auto":
        return
    target = ray_address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachableError(f"cluster.ray_address {ray_address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterUnreachableError(
            f"Ray cluster at {ray_address} (cluster.ray_address, or $RAY_ADDRESS) is unreachable within "
            f"{timeout_s:g}s: {error}"
        ) from None


def adapter_sync(config: RunConfig) -> dict | None:
    """The LoRA settings a rollout engine needs to take adapter-only syncs, or None when full weights travel."""
    lora = config.learner.lora
    return lora.model_dump() if lora.enabled and lora.sync == "adapter" else None


_REAPER = None


def ensure_reaper():
    """One reaper per process (`controller.cluster.reaper`), started before the first service."""
    global _REAPER
    if _REAPER is None or _REAPER.poll() is not None:
        from controller.cluster.reaper import start_reaper

        _REAPER = start_reaper()
    return _REAPER
