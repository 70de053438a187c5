"""Entry point of a rollout worker inside its host process (a Ray actor placed by `mtr.placement`).

`start(...)` builds the vLLM engine, connects to the simulator farm and serves `RolloutService`, and its
Prometheus metrics on a port of their own (`metrics_address`, which the controller lists for discovery).
"""

from __future__ import annotations

from mtr.broadcast import create_broadcast
from mtr.config import LoRAConfig, RolloutConfig
from mtr.grpcutil import BackgroundServer
from mtr.hardware import concrete_dtype
from mtr.simclient import SimulatorClient
from rollout.metrics import RolloutMetrics
from rollout.service import RolloutServicer, create_server
from rollout.vllm_engine import VLLMTurnGenerator


class RolloutHost:
    def __init__(
        self, servicer: RolloutServicer, server: BackgroundServer, generator: VLLMTurnGenerator, metrics_address: str
    ) -> None:
        self.servicer = servicer
        self.server = server
        self.generator = generator
        self.address = server.address
        self.metrics_address = metrics_address

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        return self.generator.prompt_logprobs(token_ids)

    def stop(self) -> None:
        self.server.stop()
        self.servicer.metrics.close()


def start(
    model_path: str,
    rollout: dict,
    dtype: str,
    seed: int,
    simulator_addresses: list[str],
    simulator_timeout_s: float = 10.0,
    broadcast: str = "ray",
    host: str = "127.0.0.1",
    initial_version: int = 0,
    worker: str = "rollout-0",
    metrics_port: int = 0,
    lora: dict | None = None,
    initial_adapter: str | None = None,
) -> RolloutHost:
    """`initial_version`: the policy version of the weights at `model_path` (a resumed run's checkpoint).

    `worker` names this worker in its metrics; they are served on `host`:`metrics_port` (0: a free port).
    """
    config = RolloutConfig.model_validate(rollout)
    adapters = LoRAConfig.model_validate(lora) if lora else None  # the learner syncs LoRA adapters
    generator = VLLMTurnGenerator(model_path, config, concrete_dtype(dtype), seed, lora=adapters)
    if initial_adapter and generator.adapters is not None:  # a resumed LoRA run: base weights + its adapter
        generator.adapters.use_saved(initial_adapter)
    simulator = SimulatorClient(simulator_addresses, timeout_s=simulator_timeout_s)
    simulator.wait_ready(60)
    metrics = RolloutMetrics(worker)
    servicer = RolloutServicer(
        generator,
        simulator,
        create_broadcast(broadcast),
        config.max_model_len,
        initial_version=initial_version,
        metrics=metrics,
    )
    server = BackgroundServer(lambda address: create_server(address, servicer), host=host)
    return RolloutHost(servicer, server, generator, f"{host}:{metrics.serve(metrics_port, host)}")
