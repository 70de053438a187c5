"""Entry point of the learner inside its host process (a Ray actor placed by `mtr.placement`).

`start(...)` builds the learner and serves `LearnerService`; after an update it publishes the weights to the
Ray object store under the new version for rollout workers to load. With `learner.world_size` 1 the
DeepSpeed engine runs in this process; with more, this process only serves gRPC and drives a
`RayLearnerGroup` of rank actors, whose rank 0 publishes. Either way this process serves the learner's
Prometheus metrics on a port of its own (`metrics_address`, which the controller lists for discovery).
"""

from __future__ import annotations

import os

from learner.metrics import LearnerMetrics
from mtr.config import LearnerConfig
from mtr.grpcutil import BackgroundServer
from mtr.placement import LOOPBACK, NODE_IP


class LearnerHost:
    def __init__(self, learner, server: BackgroundServer, metrics: LearnerMetrics, metrics_address: str) -> None:
        self.learner = learner
        self.server = server
        self.address = server.address
        self.metrics = metrics
        self.metrics_address = metrics_address

    def stop(self) -> None:
        self.server.stop()
        self.metrics.close()
        close = getattr(self.learner, "close", None)  # a group ends its rank actors; one rank has nothing to end
        if close is not None:
            close()


def _single_rank_rendezvous() -> None:
    """This host is a one-rank world: give it its own rendezvous port.

    Ray actors inherit the driver's environment, so a MASTER_PORT set there (or by another learner in the
    same process tree) would collide; the host that owns the rank layout sets it, not inherits it.
    """
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")


def start(
    model_path: str,
    learner: dict,
    total_steps: int,
    broadcast: str | None = None,
    host: str = LOOPBACK,
    metrics_port: int = 0,
) -> LearnerHost:
    """Build the learner `learner` (a LearnerConfig dump) describes and serve it on `host` (port chosen freely);
    its metrics on `host`:`metrics_port` (0: a free port). `broadcast` ("ray", "collective" or "local")
    defaults to what `learner.weight_sync` asks for."""
    from learner.group import create_learner
    from learner.service import create_server

    config = LearnerConfig.model_validate(learner)
    if config.world_size == 1:
        _single_rank_rendezvous()
    engine = create_learner(model_path, config, total_steps)
    broadcast = broadcast or ("collective" if config.weight_sync == "collective" else "ray")
    # A collective group's rank 0 listens on its own node's IP (a learner group's rank 0 may be elsewhere).
    group_host = LOOPBACK if host == LOOPBACK else NODE_IP

    def publish(version: int):
        return engine.publish(version, broadcast)

    metrics = LearnerMetrics()
    try:
        server = BackgroundServer(
            lambda address: create_server(address, engine, publish, metrics, group_host), host=host
        )
        metrics_address = f"{host}:{metrics.serve(metrics_port, host)}"
    except BaseException:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
        raise
    return LearnerHost(engine, server, metrics, metrics_address)
