"""The prompt a ToolActor model answers: one tool, one call's arguments, and whether to be useful or noisy.

Shared by the two sides that must agree on it token for token: the harvest that writes training pairs
(`mtr simulator train`) and the model actor that serves the trained checkpoint in a simulator replica.
As in ZeroSearch, the quality flag is part of the prompt, so one model can write either a useful
observation (the facts the real tool would return) or a noisy one (facts from unrelated documents), and a
schedule can move the share of noisy ones during training.
"""

from __future__ import annotations

import json
from typing import Literal

Quality = Literal["useful", "noisy"]
# Tools whose observations are computed, never simulated (a simulated sum can only be wrong): the simulator
# library's computed operations, by the names it offers them under.
EXACT_TOOL_NAMES = frozenset({"compare", "date_diff", "calculator"})
QUALITIES: tuple[Quality, ...] = ("useful", "noisy")

_SYSTEM = (
    "You are the tool `{name}`: {description}\nReply with the tool's result as one JSON object.\nQuality: {quality}"
)


def canonical_json(value: object) -> str:
    """Compact, key-sorted JSON: the same arguments always render to the same prompt (and cache key)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def actor_messages(tool: dict, arguments: dict, quality: Quality = "useful") -> list[dict]:
    """System + user chat messages for one call of `tool` (an OpenAI function tool) with `arguments`."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    function = tool["function"]
    system = _SYSTEM.format(name=function["name"], description=function.get("description", ""), quality=quality)
    return [{"role": "system", "content": system}, {"role": "user", "content": canonical_json(arguments)}]


def prompt_text(messages: list[dict]) -> str:
    """The messages in ChatML, ending in the assistant header: the exact text the model is trained and served
    on, whatever chat template its checkpoint carries (an MTR checkpoint's renders the policy's grammar)."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def observation_text(observation: dict) -> str:
    """How an observation is written as the model's answer (what it is trained on and generates)."""
    return canonical_json(observation)
