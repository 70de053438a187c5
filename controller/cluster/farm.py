"""The simulator farm of a run, by placement: one interface (`start() -> addresses`, `stop()`), three variants.

    local     LocalSimulatorFarm  replica processes on the controller's machine    (controller/cluster/simfarm.py)
    ray       RaySimulatorFarm    each replica a Ray actor, placed by resources     (controller/cluster/raysimfarm.py)
    external  ExternalFarm        replicas someone else runs (a Kubernetes Service)  (here; nothing is started)

`RunConfig.simulator_placement` picks one ('auto' resolves to ray on a cluster, see mtr/config.py). Whatever
the placement, the controller and the rollout workers reach the farm through the addresses `start` returns.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Protocol

from controller.cluster.simfarm import LocalSimulatorFarm, SimulatorFarmError
from mtr.config import RunConfig

log = logging.getLogger("mtr.farm")


class SimulatorFarm(Protocol):
    def start(self) -> list[str]:
        """Start (or find) the replicas; returns their gRPC addresses ("host:port")."""

    def stop(self) -> None:
        """Stop what `start` started."""


def create_farm(config: RunConfig, log_dir: Path, host: str) -> SimulatorFarm:
    """The farm `config` asks for; `host` is where Ray-placed replicas bind (see mtr.placement.bind_address)."""
    placement = config.simulator_placement
    if placement == "external":
        return ExternalFarm(config.simulator.addresses)
    if placement == "ray":
        from controller.cluster.raysimfarm import RaySimulatorFarm

        return RaySimulatorFarm(config.simulator, config.world.seed, host)
    return LocalSimulatorFarm(config.simulator, config.world.seed, log_dir)


class ExternalFarm:
    """Replicas that run elsewhere, e.g. the simulator Deployment behind a headless Kubernetes Service.

    A hostname is expanded into every address it resolves to, because the simulator client balances across the
    replicas it is given, one channel each: a Service name handed over as one address would put a client's whole
    load on the single pod its connection happens to reach. The set is fixed when the run starts.
    """

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = list(addresses)

    def start(self) -> list[str]:
        resolved = [replica for address in self.addresses for replica in expand(address)]
        unique = list(dict.fromkeys(resolved))
        log.info("external simulator farm: %s -> %d replica(s): %s", self.addresses, len(unique), unique)
        return unique

    def stop(self) -> None:
        """Nothing to stop: the farm is not ours."""


def expand(address: str) -> list[str]:
    """ "host:port" -> one "ip:port" per address `host` resolves to (IPv4 preferred); an IP literal stays as is."""
    host, _, port = address.rpartition(":")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return [address]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise SimulatorFarmError(f"simulator.addresses: cannot resolve {address!r}: {error}") from None
    ips = list(dict.fromkeys(info[4][0] for info in infos))
    ipv4 = [ip for ip in ips if ":" not in ip]
    return [f"{ip}:{port}" for ip in ipv4] if ipv4 else [f"[{ip}]:{port}" for ip in ips]
