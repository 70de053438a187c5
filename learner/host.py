"""Entry point of the learner inside its host process (a Ray actor placed by `mtr.placement`).

`start(...)` builds the DeepSpeed engine and serves `LearnerService`; after an update it publishes the
weights to the Ray object store under the new version for rollout workers to load.
"""

from __future__ import annotations

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


def start(model_path: str, learner: dict, total_steps: int, broadcast: str = "ray", host: str = "127.0.0.1"):
    from learner.engine import PolicyLearner
    from learner.service import create_server

    config = LearnerConfig.model_validate(learner)
    engine = PolicyLearner(model_path, config, total_steps)
    weights = create_broadcast(broadcast)

    def publish(version: int) -> tuple[float, int]:
        info = weights.publish(version, engine.named_weights(), dtype=config.precision)
        return info.seconds, info.bytes

    server = BackgroundServer(lambda address: create_server(address, engine, publish), host=host)
    return LearnerHost(engine, server)
