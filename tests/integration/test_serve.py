"""Serve what you train: `mtr serve` puts a checkpoint behind vLLM's OpenAI server, and the `openai` client
sends a question with tools, gets structured `tool_calls` back, answers them with a tool message and gets a
reply. The tiny random model cannot write the grammar on its own, so each request constrains its output to the text
a trained policy writes (vLLM structured outputs, a regex); what is tested is the chat template, the hermes
tool-call parser and the round trip through the `openai` client, not the model."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the encyclopedia.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mtr serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mtr serve not healthy after {timeout_s:.0f}s")


def test_an_openai_client_gets_structured_tool_calls_from_a_served_checkpoint(tiny_model_dir, tmp_path):
    from openai import OpenAI

    port = _free_port()
    command = [sys.executable, "-m", "mtr.cli", "serve", str(tiny_model_dir), "--port", str(port)]
    command += ["--set", "model.dtype=float32", "--set", "learner.precision=float32", "--set", "rollout.kv_cache_gib=1"]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", process, 600)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        messages = [{"role": "user", "content": "Where was Ana Vell born?"}]
        call_text = (
            '<think>I search.</think>\n<tool_call>{"name": "search", "arguments": {"query": "Ana Vell"}}</tool_call>'
        )
        first = client.chat.completions.create(
            model="mtr",
            messages=messages,
            tools=[SEARCH],
            max_tokens=64,
            temperature=0.0,
            extra_body={"structured_outputs": {"regex": re.escape(call_text)}},
        )
        message = first.choices[0].message
        (call,) = message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "search" and json.loads(call.function.arguments) == {"query": "Ana Vell"}
        messages.append({"role": "assistant", "content": message.content, "tool_calls": [call.model_dump()]})
        observation = {"results": [{"title": "Ana Vell", "text": "Ana Vell was born in Velgrad."}]}
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(observation)})
        answer_text = "<think>Found it.</think>\n<answer>Velgrad</answer>"
        second = client.chat.completions.create(
            model="mtr",
            messages=messages,
            tools=[SEARCH],
            max_tokens=32,
            temperature=0.0,
            extra_body={"structured_outputs": {"regex": re.escape(answer_text)}},
        )
        assert second.choices[0].message.content == answer_text and not second.choices[0].message.tool_calls
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode is not None
