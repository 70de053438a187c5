"""Entry point of the learner inside its host process (a Ray actor placed by `mtr.placement`).

`start(...)` builds the DeepSpeed engine and serves `LearnerService`; after an update it publishes the
weights to the Ray object store under the new version for rollout workers to load.
"""

from __future__ import annotations

import os

from mtr.broadcast import create_broadcast
from mtr.config import LearnerConfig
from mtr.grpcutil import BackgroundServer


class LearnerHost:
    def __init__(self, learner, server: BackgroundServer) -> None:
        self.learner = learner
        self.server = server
        self.address = server.address

    def stop(self) -> None:
        self.server.stop()


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


def start(model_path: str, learner: dict, total_steps: int, broadcast: str = "ray", host: str = "127.0.0.1"):
    from learner.engine import PolicyLearner
    from learner.service import create_server

    config = LearnerConfig.model_validate(learner)
    _single_rank_rendezvous()
    engine = PolicyLearner(model_path, config, total_steps)
    weights = create_broadcast(broadcast)

    def publish(version: int) -> tuple[float, int]:
        info = weights.publish(version, engine.named_weights(), dtype=config.precision)
        return info.seconds, info.bytes

    server = BackgroundServer(lambda address: create_server(address, engine, publish), host=host)
    return LearnerHost(engine, server)
