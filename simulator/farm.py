"""A farm of simulator replicas on one machine: `python -m simulator serve --replicas N ...`.

The supervisor starts N replica processes (`serve` with the same flags), each on its own port (`--port P` gives
P, P+1, ...; port 0 lets each pick) with its own metrics port and cache shard, and writes one ready file
listing every address: {"addresses": [...], "replicas": [{"name", "address", "pid", "metrics_port"}], "pid"}.
A replica that dies is started again on the same port, so clients holding the address list need no change;
SIGTERM or SIGINT stops them all. Clients balance across the addresses themselves (mtr.simclient), which is
why replicas on other machines (started one by one) join a farm just by being listed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulator.files import write_json_atomically
from simulator.security import TOKEN_ENV, resolve_token

log = logging.getLogger("simulator.farm")

_POLL_S = 0.1
_RESTART_BACKOFF_S = (1.0, 30.0)  # first and longest pause before restarting a replica that keeps dying
_HEALTHY_RUN_S = 60.0  # a replica that lived this long starts over from the shortest pause
# Flags every replica gets exactly as the supervisor received them.
_FORWARDED = (
    ("--host", "host"),
    ("--world-seed", "world_seed"),
    ("--top-k", "top_k"),
    ("--max-argument-chars", "max_argument_chars"),
    ("--max-text-chars", "max_text_chars"),
    ("--cache-size", "cache_size"),
    ("--cache-save-interval-s", "cache_save_interval_s"),
    ("--grace-s", "grace_s"),
    ("--actor-threads", "actor_threads"),
    ("--tls-cert", "tls_cert"),
    ("--tls-key", "tls_key"),
)


class FarmError(RuntimeError):
    """The farm could not start (a replica died or was not ready in time); the message names the replica."""


@dataclass(frozen=True)
class ReplicaPlan:
    """What makes replica `index` distinct from its siblings."""

    index: int
    name: str
    port: int
    metrics_port: int
    cache_file: Path | None
    cache_preload: tuple[Path, ...] = ()


@dataclass(eq=False)
class _Child:
    plan: ReplicaPlan
    ready_file: Path
    process: subprocess.Popen | None = None
    address: str = ""
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    ready: bool = False
    fields: dict = field(default_factory=dict)


def plan_replicas(args: argparse.Namespace) -> list[ReplicaPlan]:
    """Ports, names and cache shards of `args.replicas` replicas; shard i of cache.msgpack is cache.replica-i.msgpack.

    Each replica also preloads the plain file and its siblings' shards, so every replica starts from the union
    of the farm's answers: where a call lands in a rerun must not change its observation.
    """
    base = args.name or "replica"
    shards = [_shard(args.cache_file, i) for i in range(args.replicas)] if args.cache_file else []
    plans = []
    for index in range(args.replicas):
        preload = (args.cache_file, *(s for i, s in enumerate(shards) if i != index)) if shards else ()
        plans.append(
            ReplicaPlan(
                index=index,
                name=f"{base}-{index}",
                port=args.port + index if args.port else 0,
                metrics_port=args.metrics_port + index if args.metrics_port else 0,
                cache_file=shards[index] if shards else None,
                cache_preload=preload,
            )
        )
    return plans


def replica_command(args: argparse.Namespace, plan: ReplicaPlan, ready_file: Path, port: int) -> list[str]:
    """The `serve` command line of one replica (the auth token travels in the environment, never in argv)."""
    command = [sys.executable, "-m", "simulator", "serve", "--replicas", "1", "--port", str(port)]
    for flag, attribute in _FORWARDED:
        value = getattr(args, attribute)
        if value is not None:
            command += [flag, str(value)]
    if args.allow_remote:
        command.append("--allow-remote")
    command += ["--name", plan.name, "--ready-file", str(ready_file), "--exit-with-parent", str(os.getpid())]
    if plan.metrics_port:
        command += ["--metrics-port", str(plan.metrics_port)]
    if plan.cache_file:
        command += ["--cache-file", str(plan.cache_file)]
        for path in plan.cache_preload:
            command += ["--cache-preload", str(path)]
    return command


class ReplicaSupervisor:
    """Starts, watches, restarts and stops the replica processes of one farm."""

    def __init__(self, args: argparse.Namespace, workdir: Path, start_timeout_s: float = 120.0) -> None:
        self.args = args
        self.workdir = workdir
        self.start_timeout_s = start_timeout_s
        self.children = [_Child(plan, workdir / f"{plan.name}.ready.json") for plan in plan_replicas(args)]
        self._env = dict(os.environ)
        token = resolve_token(args.auth_token)
        if token:
            self._env[TOKEN_ENV] = token

    def start(self) -> None:
        """Start every replica and wait until all are ready; on any failure stop them all and raise FarmError."""
        for child in self.children:
            self._spawn(child)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not all(child.ready for child in self.children):
                for child in self.children:
                    if not child.ready and child.process.poll() is not None:
                        raise FarmError(
                            f"replica {child.plan.name} exited with {child.process.returncode} before it was ready "
                            "(its log is above)"
                        )
                    self._check_ready(child)
                if time.monotonic() > deadline:
                    late = [c.plan.name for c in self.children if not c.ready]
                    raise FarmError(f"replicas {late} not ready after {self.start_timeout_s:.0f}s")
                time.sleep(_POLL_S)
        except BaseException:
            self.stop()
            raise

    def describe(self) -> dict:
        """The farm's ready-file document."""
        return {
            "addresses": [child.address for child in self.children],
            "replicas": [child.fields for child in self.children],
            "pid": os.getpid(),
        }

    def watch(self, stop: threading.Event, on_change) -> None:
        """Until `stop` is set: restart replicas that die (same port, growing pause); `on_change` when one is back."""
        while not stop.wait(_POLL_S):
            for child in self.children:
                if self._tend(child):
                    on_change()

    def stop(self) -> None:
        """SIGTERM every replica, give them their grace period, then SIGKILL whatever is left."""
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + self.args.grace_s + 10.0
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("replica pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()

    def _tend(self, child: _Child) -> bool:
        """One look at one replica; True when it just became ready again after a restart."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                self._spawn(child)
            return False
        if child.process.poll() is not None:
            lived = now - child.started_at
            if lived >= _HEALTHY_RUN_S:
                child.restarts = 0
            pause = min(_RESTART_BACKOFF_S[0] * 2**child.restarts, _RESTART_BACKOFF_S[1])
            child.restarts += 1
            child.ready = False
            child.restart_at = now + pause
            log.warning(
                "replica %s (pid %d) exited with %s after %.1fs; restarting on %s in %.1fs",
                child.plan.name,
                child.process.pid,
                child.process.returncode,
                lived,
                child.address,
                pause,
            )
            return False
        return not child.ready and self._check_ready(child)

    def _spawn(self, child: _Child) -> None:
        child.ready_file.unlink(missing_ok=True)
        # A restarted replica must come back where clients look for it: the port it had, not a new one.
        port = int(child.address.rsplit(":", 1)[1]) if child.address else child.plan.port
        command = replica_command(self.args, child.plan, child.ready_file, port)
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which then stops replicas in order.
        child.process = subprocess.Popen(command, env=self._env, stdin=subprocess.DEVNULL, start_new_session=True)
        child.started_at = time.monotonic()

    def _check_ready(self, child: _Child) -> bool:
        if not child.ready_file.exists():
            return False
        info = _read_json(child.ready_file)
        if info is None or info.get("pid") != child.process.pid:
            return False
        child.address, child.ready = info["address"], True
        child.fields = {
            "name": child.plan.name,
            "address": child.address,
            "pid": child.process.pid,
            "metrics_port": child.plan.metrics_port,
        }
        return True


def run_farm(args: argparse.Namespace) -> int:
    """`serve --replicas N`: start the farm, write its ready file, supervise until SIGTERM/SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="mtr-simulator-farm-") as workdir:
        supervisor = ReplicaSupervisor(args, Path(workdir))
        try:
            supervisor.start()
        except FarmError as exc:
            log.error("%s", exc)
            return 1
        publish = _publisher(args.ready_file, supervisor)
        publish()
        log.info("farm of %d replicas serving on %s", args.replicas, ", ".join(supervisor.describe()["addresses"]))
        try:
            supervisor.watch(stop, publish)
        finally:
            log.info("stopping %d replicas", args.replicas)
            supervisor.stop()
            if args.ready_file:
                args.ready_file.unlink(missing_ok=True)
    return 0


def _publisher(path: Path | None, supervisor: ReplicaSupervisor):
    def publish() -> None:
        if path:
            write_json_atomically(path, supervisor.describe())

    return publish


def _shard(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}.replica-{index}{path.suffix}")


def _read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
