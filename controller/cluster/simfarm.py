"""Starts and reaps the simulator replicas of a local run, each its own process (`python -m simulator serve`).

Replicas announce themselves through a ready file holding their address, so port 0 works and nothing
guesses ports. Each replica's output goes to a log file in the run directory; a replica that dies before
it is ready is reported with the tail of that log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mtr.config import SimulatorConfig


class SimulatorFarmError(RuntimeError):
    pass


def serve_arguments(config: SimulatorConfig, world_seed: int) -> list[str]:
    """`simulator serve` flags every replica of a run gets, wherever it is placed (the placement adds the rest)."""
    return [
        "--world-seed",
        str(world_seed),
        "--tools",
        config.tools,
        "--top-k",
        str(config.top_k),
        "--max-argument-chars",
        str(config.max_argument_chars),
        *model_actor_arguments(config),
    ]


def model_actor_arguments(config: SimulatorConfig) -> list[str]:
    """`simulator.actor: model`: every replica runs its own engine of the ToolActor checkpoint."""
    if config.actor != "model":
        return []
    return [
        "--actor",
        "model",
        "--actor-model",
        str(config.actor_model),
        "--actor-max-tokens",
        str(config.actor_max_tokens),
    ]


class LocalSimulatorFarm:
    def __init__(self, config: SimulatorConfig, world_seed: int, log_dir: Path) -> None:
        self.config = config
        self.world_seed = world_seed
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.addresses: list[str] = []
        self.metrics_addresses: list[str] = []  # host:port of each replica's /metrics (for discovery)

    def start(self, timeout_s: float | None = None) -> list[str]:
        if timeout_s is None:  # a model ToolActor starts (and compiles) a vLLM engine first
            timeout_s = 600.0 if self.config.actor == "model" else 120.0
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pending = [self._spawn(index) for index in range(self.config.replicas)]
        try:
            infos = [self._wait(process, ready, log, timeout_s) for process, ready, log in pending]
            self.addresses = [info["address"] for info in infos]
            self.metrics_addresses = [info["metrics_address"] for info in infos]
        except BaseException:
            self.stop()
            raise
        return self.addresses

    def _spawn(self, index: int) -> tuple[subprocess.Popen, Path, Path]:
        ready = self.log_dir / f"simulator-{index}.ready.json"
        ready.unlink(missing_ok=True)
        log = self.log_dir / f"simulator-{index}.log"
        command = [
            sys.executable,
            "-m",
            "simulator",
            "serve",
            *serve_arguments(self.config, self.world_seed),
            "--host",
            self.config.host,
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--name",
            f"replica-{index}",
            "--metrics-port",
            "0",
            # The replica stops when this process is gone, even if it was killed (SIGKILL) and could not say so.
            "--exit-with-parent",
            str(os.getpid()),
        ]
        with log.open("ab") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process, ready, log

    @staticmethod
    def _wait(process: subprocess.Popen, ready: Path, log: Path, timeout_s: float) -> dict:
        """The replica's ready-file document ({"address", "pid", "metrics_address"})."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready.exists():
                return json.loads(ready.read_text())
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise SimulatorFarmError(f"simulator replica exited with {process.returncode} before ready:\n{tail}")
            time.sleep(0.1)
        raise SimulatorFarmError(f"simulator replica not ready after {timeout_s:.0f}s (log: {log})")

    def stop(self, grace_s: float = 10.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    def __enter__(self) -> LocalSimulatorFarm:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
