"""A two-node Ray cluster on this machine: jobs join it by address and the simulator farm is pinned by resource.

The head (`ray start --head`, resource {"head": 2}) and a second node (`ray start --address …`, resource
{"simulator": 4}) are real raylets sharing one GCS, both on loopback and without Ray's token authentication
(whether a node turns it on depends on files in the user's home; nothing here is reachable from outside).
Each `ray start --block` runs in its own session and is stopped by signalling exactly that process (its
shutdown hook ends the node's daemons), then its process group is swept: `ray stop` would end every Ray
process on the machine, other people's included.

Placement is read back from Ray's state API (actor -> node id), not from our own logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
REPLICAS = 2
IP = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
# Environment of every process of the test cluster: nodes, `mtr` drivers (and this process while it is one).
_ENV = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}


@dataclass(frozen=True)
class TwoNodes:
    address: str  # GCS host:port, what `--ray-address` takes
    dashboard: str  # http://host:port of the state API
    head_node: str
    simulator_node: str


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_node(args: list[str], log: Path, timeout_s: float = 120.0) -> subprocess.Popen:
    """`ray start --block …` in a session of its own; returns once the node says it runs."""
    env = {**_ENV, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_node(process)
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ray start {' '.join(args)} did not come up:\n{tail}")
        time.sleep(0.5)
    return process


def _stop_node(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # `ray start --block` ends its own daemons on SIGTERM
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything of that node still in its session
    except ProcessLookupError:
        pass


def _nodes(dashboard: str) -> list[dict]:
    from ray.util.state import list_nodes

    return [node.__dict__ for node in list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")])]


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodes]:
    gcs, dashboard, head_agent, client, node_agent = _free_ports(5)
    # Unix socket paths are short-lived and length-limited: a short private directory, not pytest's tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="mtr2n-")
    logs = Path(temp_dir)
    started: list[subprocess.Popen] = []
    try:
        head = [
            "--head",
            f"--node-ip-address={IP}",
            f"--port={gcs}",
            "--num-cpus=2",
            '--resources={"head": 2}',
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={head_agent}",
            f"--ray-client-server-port={client}",
        ]
        started.append(_start_node(head, logs / "head.out"))
        worker = [
            f"--address={IP}:{gcs}",
            f"--node-ip-address={IP}",
            "--num-cpus=2",
            '--resources={"simulator": 4}',
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={node_agent}",
        ]
        started.append(_start_node(worker, logs / "worker.out"))
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 60
        while len(nodes := _nodes(url)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(nodes) == 2, f"expected 2 live nodes, the state API lists {nodes}"
        by_resource = {("simulator" if "simulator" in n["resources_total"] else "head"): n["node_id"] for n in nodes}
        yield TwoNodes(f"{IP}:{gcs}", url, by_resource["head"], by_resource["simulator"])
    finally:
        for process in reversed(started):
            _stop_node(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _actors(cluster: TwoNodes, prefix: str) -> list[dict]:
    """Every ServiceHost actor of the cluster (alive or finished) whose name starts with `prefix`."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard, filters=[("class_name", "=", "ServiceHost")], limit=1000)
    return [a.__dict__ for a in actors if (a.name or "").startswith(prefix)]


def _mtr(args: list[str], cwd: Path, timeout_s: float = 240.0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mtr.cli", *args], cwd=cwd, env=_ENV, capture_output=True, text=True, timeout=timeout_s
    )
    assert result.returncode == 0, f"mtr {args[0]} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


def test_synth_joins_the_cluster_with_the_farm_pinned_to_the_simulator_node(cluster, tmp_path):
    before = {a["actor_id"] for a in _actors(cluster, "simulator-")}
    out = tmp_path / "traces" / "sft.jsonl"
    farm = ["simulator.placement=ray", f"simulator.replicas={REPLICAS}", "simulator.resources={simulator: 1}"]
    args = ["synth", "--ray-address", cluster.address, "--limit", "4", "--out", str(out)]
    _mtr([*args, *(f"--set={override}" for override in farm)], tmp_path)

    report = json.loads(out.with_name("sft.report.json").read_text())
    assert report["datasets"]["synthetic"]["attempted"] == 4
    accepted = report["datasets"]["synthetic"]["accepted"]
    assert accepted >= 1 and len(out.read_text().splitlines()) == accepted  # tool calls went to the other node
    replicas = [a for a in _actors(cluster, "simulator-") if a["actor_id"] not in before]
    assert len(replicas) == REPLICAS
    assert {a["node_id"] for a in replicas} == {cluster.simulator_node}


def test_ray_job_submit_runs_mtr_with_the_readme_command(cluster, tmp_path):
    """The README's `ray job submit --working-dir .` form; the driver finds the cluster through RAY_ADDRESS."""
    before = {a["actor_id"] for a in _actors(cluster, "simulator-")}
    out = tmp_path / "job" / "sft.jsonl"
    entrypoint = [sys.executable, "-m", "mtr.cli", "synth", "--limit", "2", "--out", str(out)]
    entrypoint += ["--set", "simulator.resources={simulator: 1}"]  # placement: 'auto' is 'ray' on a cluster
    excludes = json.dumps({"excludes": [".git", ".venv", "runs"]})
    submit = [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--runtime-env-json"]
    result = subprocess.run(
        [*submit, excludes, "--", *entrypoint],
        cwd=Path(__file__).resolve().parents[2],
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0 and "succeeded" in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(out.with_name("sft.report.json").read_text())
    assert report["datasets"]["synthetic"]["attempted"] == 2
    replicas = [a for a in _actors(cluster, "simulator-") if a["actor_id"] not in before]
    assert [a["node_id"] for a in replicas] == [cluster.simulator_node]


_DEAD_REPLICA_PROBE = """
import json, sys, time
import ray
from controller.cluster.raysimfarm import RaySimulatorFarm
from controller.cluster.simfarm import SimulatorFarmError
from mtr.config import load_config
from mtr.placement import NODE_IP
from mtr.simclient import SimulatorClient

address, simulator_node = sys.argv[1], sys.argv[2]
farm_overrides = ["simulator.placement=ray", "simulator.replicas=2", "simulator.resources={simulator: 1}"]
config = load_config(overrides=farm_overrides)
ray.init(address=address, namespace="mtr", log_to_driver=False)
farm = RaySimulatorFarm(config.simulator, world_seed=0, host=NODE_IP, watch_interval_s=0.2)
report = {}
try:
    addresses = farm.start()
    report["nodes"] = sorted({replica.node_id for replica in farm.replicas})
    dead = farm.replicas[1]
    report["dead_address"] = dead.address
    ray.kill(dead.actor)
    deadline = time.monotonic() + 30  # the watcher pings every 0.2 s
    while time.monotonic() < deadline:
        try:
            farm.check()
        except SimulatorFarmError as error:
            report["error"] = str(error)
            break
        time.sleep(0.1)
    with SimulatorClient(addresses, timeout_s=10) as client:
        result = client.call_tool("q0", "search", json.dumps({"query": "river"}))
    report["survivor_ok"], report["survivor_error"] = result.ok, result.error
finally:
    farm.stop()
    ray.shutdown()
print("PROBE " + json.dumps(report))
"""


def test_a_dead_replica_is_named_and_the_others_keep_serving(cluster):
    """Run as its own driver process: a Ray session an earlier test left in this process must not leak in."""
    import re

    command = [sys.executable, "-c", _DEAD_REPLICA_PROBE, cluster.address, cluster.simulator_node]
    done = subprocess.run(command, cwd=REPO, env=_ENV, capture_output=True, text=True, timeout=240)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert done.returncode == 0 and lines, (
        f"probe failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    )
    report = json.loads(lines[-1].removeprefix("PROBE "))
    assert report["nodes"] == [cluster.simulator_node]
    assert re.search(
        rf"simulator replica-1 \({re.escape(report['dead_address'])} on node .*\) died", report.get("error", "")
    )
    assert report["survivor_ok"], report["survivor_error"]


def test_a_training_step_places_every_role_by_resource(cluster, tiny_model_dir, tmp_path):
    """vLLM rollout and DeepSpeed learner pinned to the head, the farm to the simulator node, in one `mtr grpo`."""
    before = {a["actor_id"] for a in _actors(cluster, "")}
    overrides = [
        "world.n_train=4",
        "world.n_eval=1",
        "eval.questions=1",
        "model.dtype=float32",
        "learner.precision=float32",
        "rollout.group_size=2",
        "rollout.max_turns=1",
        "rollout.max_tokens_per_turn=16",
        "rollout.max_model_len=1024",
        "rollout.resources={head: 1}",
        "learner.resources={head: 1}",
        "grpo.steps=1",
        "grpo.questions_per_step=1",
        "grpo.curriculum.enabled=false",
        f"simulator.replicas={REPLICAS}",
        "simulator.resources={simulator: 1}",  # placement: 'auto' is 'ray' on a cluster
    ]
    args = ["grpo", "--ray-address", cluster.address, "--model", str(tiny_model_dir), "--out", str(tmp_path / "grpo")]
    _mtr([*args, *(f"--set={override}" for override in overrides)], tmp_path, timeout_s=400)

    actors = [a for a in _actors(cluster, "") if a["actor_id"] not in before]
    roles: dict[str, set[str]] = {}
    for actor in actors:  # names are "<role>[-<index>]-<unique suffix>"
        roles.setdefault(actor["name"].split("-")[0], set()).add(actor["node_id"])
    assert roles == {
        "simulator": {cluster.simulator_node},
        "rollout": {cluster.head_node},
        "learner": {cluster.head_node},
    }
