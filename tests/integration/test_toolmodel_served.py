"""Models as tools, for real on loopback: `mtr simulator train` harvests through the grounded farm and trains
with the DeepSpeed learner; a replica serves the checkpoint from its own vLLM engine and answers each call
with a schema-valid observation or a counted error; SetNoise reaches the replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from controller.cluster.simfarm import LocalSimulatorFarm
from controller.commands.toolmodel import tokenize_pairs
from mtr.config import SimulatorConfig
from mtr.grpcutil import BackgroundServer
from mtr.simclient import SimulatorClient, SimulatorError
from mtr.task import Document
from mtr.toolprompt import actor_messages
from simulator.grounded import GroundedActor
from simulator.server import create_server
from simulator.toolmaker import ToolMaker

pytestmark = pytest.mark.integration

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def test_pairs_are_tokenized_with_the_loss_on_the_observation_only(tiny_model_dir):
    messages = actor_messages(SEARCH, {"query": "Ana Vell"}, "useful")
    record = {"messages": [*messages, {"role": "assistant", "content": '{"results":[]}'}]}
    (sequence,) = tokenize_pairs([record], str(tiny_model_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    trained = [t for t, m in zip(sequence.token_ids, sequence.loss_mask, strict=True) if m]
    assert tokenizer.decode(trained) == '{"results":[]}' + tokenizer.eos_token
    assert sequence.loss_mask[0] == 0 and "Quality: useful" in tokenizer.decode(sequence.token_ids)


def _metric(address: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.slow
def test_a_trained_tool_model_serves_calls_from_its_weights(tmp_path, tiny_model_dir):
    out = tmp_path / "toolmodel"
    settings = [
        f"toolmodel.base_model={tiny_model_dir}",
        "toolmodel.steps=2",
        "toolmodel.batch_size=4",
        "world.n_train=6",
        "world.n_eval=6",
        "learner.precision=float32",
        "model.dtype=float32",
    ]
    command = [sys.executable, "-m", "mtr.cli", "simulator", "train", "--out", str(out)]
    done = subprocess.run(command + [a for s in settings for a in ("--set", s)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    final = out / "checkpoints" / "final"
    assert (final / "config.json").is_file() and (final / "toolmodel.json").is_file()
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {p["quality"] for p in pairs} == {"useful", "noisy"}
    summary = json.loads((final / "toolmodel.json").read_text())
    assert summary["pairs"] == sum(p["split"] == "train" for p in pairs) and summary["steps"] == 2

    config = SimulatorConfig(actor="model", actor_model=str(final), actor_max_tokens=48, tools="task")
    farm = LocalSimulatorFarm(config, world_seed=0, log_dir=tmp_path / "logs")
    farm.start()
    try:
        with SimulatorClient(farm.addresses, timeout_s=120.0) as client:
            client.wait_ready(30)
            search = client.call_tool("t0", "search", json.dumps({"query": "where was Ana born"}))
            # A random tiny model writes JSON under the schema; cut by the token cap, it is a counted error.
            assert search.status in ("ok", "backend_error"), search
            if search.ok:
                assert isinstance(search.observation.get("results"), list)
            else:
                assert "ToolActor model" in search.error
            exact = client.call_tool("t0", "calculator", json.dumps({"expression": "2 + 3"}))
            assert exact.ok and exact.observation["result"] == 5  # computed, never generated
            client.set_noise(0.5)
            metrics = farm.metrics_addresses[0]
            assert _metric(metrics, 'mtr_simulator_calls_total{status="' + search.status) == 1
            assert _metric(metrics, "mtr_simulator_noise_share") == 0.5
    finally:
        farm.stop()


def test_a_grounded_replica_refuses_a_noisy_share_by_name():
    actor = GroundedActor((Document("Alba", "Alba is a town."),))
    server = BackgroundServer(lambda address: create_server(address, actor, ToolMaker(), replica="r-ground"))
    try:
        with SimulatorClient([server.address], timeout_s=5.0) as client:
            client.wait_ready(10)
            client.set_noise(0.0)  # nothing to change: accepted
            with pytest.raises(SimulatorError, match="FAILED_PRECONDITION.*r-ground.*no noisy mode"):
                client.set_noise(0.3)
    finally:
        server.stop()
