"""The multi-turn agent loop: generate until a tool call or an answer, call the tools, append, continue.

All live sequences of all groups advance together: one batched generate call per turn (vLLM batches them
continuously), then one batched `call_many` to the simulator farm for every tool call of that turn. Each
sample keeps token ids, sampling log-probs and a loss mask (1 on policy tokens only), in the byte-exact
trace grammar of `mtr.grammar`, so the learner trains on exactly what the engine saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mtr.grammar import TraceFormatError, parse_assistant_turn, render_observation, render_prompt
from mtr.simclient import ToolCallRequest, ToolResult
from mtr.task import Task

IM_END = "<|im_end|>"

log = logging.getLogger("mtr.rollout")


@dataclass(frozen=True)
class TurnRequest:
    prompt_token_ids: list[int]
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class TurnOutput:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    # "stop" when the model ended its turn (EOS), "length" when it hit the token cap.
    finish_reason: str


class TurnGenerator(Protocol):
    def generate_turns(self, requests: Sequence[TurnRequest]) -> list[TurnOutput]: ...


class ToolCaller(Protocol):
    def call_many(self, calls: Sequence[ToolCallRequest]) -> list[ToolResult]: ...


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class LoopLimits:
    max_turns: int
    max_tokens_per_turn: int
    max_model_len: int
    seed: int = 0


@dataclass(frozen=True)
class ToolCallLog:
    name: str
    arguments_json: str
    observation_json: str
    status: str


@dataclass
class Sample:
    """One live sequence of a group."""

    task: Task
    sample_index: int
    token_ids: list[int]
    logprobs: list[float]
    loss_mask: list[int]
    prompt_tokens: int
    text: str
    turns: int = 0
    tool_calls: list[ToolCallLog] = field(default_factory=list)
    finish_reason: str = ""

    @property
    def finished(self) -> bool:
        return bool(self.finish_reason)

    def append(self, token_ids: Sequence[int], text: str, logprobs: Sequence[float] | None) -> None:
        self.token_ids.extend(token_ids)
        self.text += text
        if logprobs is None:
            self.logprobs.extend([0.0] * len(token_ids))
            self.loss_mask.extend([0] * len(token_ids))
        else:
            self.logprobs.extend(logprobs)
            self.loss_mask.extend([1] * len(token_ids))


def sample_seed(base_seed: int, task_id: str, sample_index: int, turn: int) -> int:
    """Stable per-(task, sample, turn) seed: same seed, same traces, whatever the batch composition."""
    digest = hashlib.blake2b(f"{base_seed}/{task_id}/{sample_index}/{turn}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def start_samples(tasks: Sequence[Task], group_size: int, tokenizer: Tokenizer) -> list[Sample]:
    samples = []
    for task in tasks:
        prompt = render_prompt(task.question, task.tools)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        for index in range(group_size):
            samples.append(
                Sample(
                    task,
                    index,
                    list(prompt_ids),
                    [0.0] * len(prompt_ids),
                    [0] * len(prompt_ids),
                    len(prompt_ids),
                    prompt,
                )
            )
    return samples


def run_agent_loop(
    tasks: Sequence[Task],
    group_size: int,
    generator: TurnGenerator,
    tools: ToolCaller,
    tokenizer: Tokenizer,
    limits: LoopLimits,
) -> list[Sample]:
    """Run every sample to an answer, a malformed turn, or a budget; returns samples in task-major order."""
    samples = start_samples(tasks, group_size, tokenizer)
    started = time.perf_counter()
    turn = 0
    while live := [s for s in samples if not s.finished]:
        if turn:  # progress of a long batch (an evaluation of hundreds of questions takes minutes)
            _log_progress(samples, turn, time.perf_counter() - started)
        turn += 1
        requests = []
        for sample in list(live):
            request = _turn_request(sample, limits)
            if request.max_tokens <= 0:  # the context is full: nothing more can be generated
                sample.finish_reason = "length"
                live.remove(sample)
            else:
                requests.append(request)
        if not requests:
            break
        outputs = generator.generate_turns(requests)
        pending: list[tuple[Sample, ToolCallRequest]] = []
        for sample, output in zip(live, outputs, strict=True):
            call = _absorb_turn(sample, output, limits)
            if call is not None:
                pending.append((sample, call))
        if pending:
            results = tools.call_many([call for _, call in pending])
            for (sample, call), result in zip(pending, results, strict=True):
                _absorb_observation(sample, call, result, tokenizer)
    return samples


def _log_progress(samples: Sequence[Sample], turns_done: int, seconds: float) -> None:
    finished = sum(s.finished for s in samples)
    log.info("agent loop: %d/%d traces finished after %d turns (%.1fs)", finished, len(samples), turns_done, seconds)


def _turn_request(sample: Sample, limits: LoopLimits) -> TurnRequest:
    room = limits.max_model_len - len(sample.token_ids)
    return TurnRequest(
        prompt_token_ids=sample.token_ids,
        max_tokens=min(limits.max_tokens_per_turn, room),
        seed=sample_seed(limits.seed, sample.task.id, sample.sample_index, sample.turns),
    )


def _absorb_turn(sample: Sample, output: TurnOutput, limits: LoopLimits) -> ToolCallRequest | None:
    """Append the policy's turn; return the tool call to make, or None when the sample is finished."""
    text = output.text if output.text.endswith(IM_END) or output.finish_reason != "stop" else output.text + IM_END
    sample.append(output.token_ids, text, output.logprobs)
    sample.turns += 1
    if output.finish_reason != "stop":
        sample.finish_reason = "length"
        return None
    try:
        turn = parse_assistant_turn(text, sample.task.tools)
    except TraceFormatError:
        sample.finish_reason = "malformed"
        return None
    if turn.answer is not None:
        sample.finish_reason = "answer"
        return None
    if sample.turns >= limits.max_turns:
        sample.finish_reason = "turn_budget"
        return None
    return ToolCallRequest(
        task_id=sample.task.id,
        name=turn.tool_call.name,
        arguments_json=json.dumps(turn.tool_call.arguments, ensure_ascii=False),
        documents=sample.task.documents,
    )


def _absorb_observation(sample: Sample, call: ToolCallRequest, result: ToolResult, tokenizer: Tokenizer) -> None:
    observation_text = render_observation(result.observation)
    sample.append(tokenizer.encode(observation_text, add_special_tokens=False), observation_text, None)
    sample.tool_calls.append(
        ToolCallLog(call.name, call.arguments_json, json.dumps(result.observation, ensure_ascii=False), result.status)
    )
