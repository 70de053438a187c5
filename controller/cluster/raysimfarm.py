"""The simulator farm as Ray actors (placement 'ray'): each replica a `ServiceHost` running `simulator.host:start`.

Each replica reserves `simulator.num_cpus_per_replica` CPUs and `simulator.resources` (a custom resource such
as {"simulator": 1} keeps the farm on the nodes started with it), and binds the address `host` says (its node's
IP on a cluster). The replicas serve exactly what `mtr simulator serve` serves, so clients cannot tell the
placements apart. A watcher pings every replica's actor; one that dies is reported at once by name, address,
node and Ray's reason (the simulator client meanwhile fails its calls over to the live replicas), and `check()`
raises with the same message.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from controller.cluster.simfarm import SimulatorFarmError, serve_arguments
from mtr.config import SimulatorConfig
from mtr.placement import LOOPBACK, RoleSpec, check_resources, launch_all

log = logging.getLogger("mtr.farm")


@dataclass(frozen=True)
class Replica:
    name: str
    address: str
    node_id: str
    actor: object


class RaySimulatorFarm:
    def __init__(
        self,
        config: SimulatorConfig,
        world_seed: int,
        host: str = LOOPBACK,
        start_timeout_s: float = 300.0,
        watch_interval_s: float = 2.0,
    ) -> None:
        self.config = config
        self.world_seed = world_seed
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.watch_interval_s = watch_interval_s
        self.replicas: list[Replica] = []
        self.metrics_addresses: list[str] = []
        self._dead: dict[str, str] = {}
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    def specs(self) -> list[RoleSpec]:
        """One role spec per replica: same flags as a local replica, plus metrics on a free port."""
        serve_args = [*serve_arguments(self.config, self.world_seed), "--metrics-port", "0"]
        return [
            RoleSpec(
                "simulator.host:start",
                {"serve_args": serve_args, "name": f"replica-{index}"},  # as a local farm names them
                num_cpus=self.config.num_cpus_per_replica,
                resources=dict(self.config.resources),
                host=self.host,
                label=f"simulator-{index}",
            )
            for index in range(self.config.replicas)
        ]

    def start(self) -> list[str]:
        import ray

        specs = self.specs()
        check_resources(specs[0])
        launched = launch_all(specs, timeout_s=self.start_timeout_s)
        actors = [actor for actor, _ in launched]
        try:
            nodes = ray.get([actor.node.remote() for actor in actors], timeout=60)
            metrics = ray.get([actor.metrics_address.remote() for actor in actors], timeout=60)
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            raise
        self.metrics_addresses = [address for address in metrics if address]
        self.replicas = [
            Replica(spec.kwargs["name"], address, node_id, actor)
            for spec, (actor, address), (node_id, _) in zip(specs, launched, nodes, strict=True)
        ]
        for replica in self.replicas:
            log.info("simulator %s serving at %s on node %s", replica.name, replica.address, replica.node_id[:12])
        self._watcher = threading.Thread(target=self._watch, name="simulator-farm-watch", daemon=True)
        self._watcher.start()
        return [replica.address for replica in self.replicas]

    def check(self) -> None:
        """Raise SimulatorFarmError naming every replica that has died so far."""
        if self._dead:
            raise SimulatorFarmError("; ".join(self._dead.values()))

    def _watch(self) -> None:
        import ray

        while not self._stopped.wait(self.watch_interval_s):
            live = [replica for replica in self.replicas if replica.name not in self._dead]
            pings = [(replica, replica.actor.node.remote()) for replica in live]
            for replica, ping in pings:
                try:
                    ray.get(ping, timeout=max(30.0, self.watch_interval_s))
                except ray.exceptions.RayActorError as error:
                    if self._stopped.is_set():
                        return
                    message = (
                        f"simulator {replica.name} ({replica.address} on node {replica.node_id[:12]}) died: "
                        f"{_compact(error)}"
                    )
                    self._dead[replica.name] = message
                    log.error("%s; calls go to the other replicas", message)
                except ray.exceptions.GetTimeoutError:
                    log.warning("simulator %s did not answer a liveness ping in time", replica.name)

    def stop(self) -> None:
        import ray

        self._stopped.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self.watch_interval_s + 35)
        stops = [replica.actor.stop.remote() for replica in self.replicas if replica.name not in self._dead]
        try:
            ray.wait(stops, num_returns=len(stops), timeout=30)
        finally:
            for replica in self.replicas:
                ray.kill(replica.actor)
            self.replicas = []


def _compact(error: BaseException, limit: int = 600) -> str:
    """Ray's death message (cause, exit type, node) on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
