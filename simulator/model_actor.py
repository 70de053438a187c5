"""The model ToolActor: a trained checkpoint writes every observation from its weights, in a vLLM engine.

This is "models as tools": the replica holds no corpus and reaches no endpoint. The model gets the prompt
`mtr.toolprompt` defines (the one it was trained on in `mtr simulator train`) and decodes under the tool's
output schema (vLLM structured outputs), so what it writes is JSON of the right shape by construction; it
is parsed and validated again, and an invalid generation raises `BackendError` with its reason, which the
call handler turns into a counted error observation. Never a silent fall back to the grounded actor: that
would hide the sim-to-real gap this actor exists to measure. compare/date_diff/calculator stay exact.

Quality (ZeroSearch): each call is answered useful or noisy. A call is noisy when a stable hash of it falls
below the current noise share (`set_noise_share`), so the same call gets the same answer at a given share
and the noisy set only grows as the share rises; the cache key carries the quality (`cache_variant`).

Calls arrive from the server's worker threads; one generation thread gathers whatever is waiting into a
single vLLM batch, because one sequence at a time would leave the CPU idle between tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from mtr.toolprompt import Quality, actor_messages, canonical_json, prompt_text
from mtr.toolschema import instance_errors
from simulator.grounded import BackendError, DocumentSet, GroundedActor
from simulator.library import COMPUTED_OPERATIONS, ToolResolver

log = logging.getLogger(__name__)

_MAX_BATCH = 64


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict]
    output_schema: dict


class ObservationGenerator(Protocol):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]: ...


class VLLMObservationGenerator:
    """Greedy, schema-constrained chat generation with vLLM (the CPU build here, the CUDA one on GPUs)."""

    def __init__(self, model_path: str, *, max_tokens: int, dtype: str, kv_cache_gib: int, seed: int) -> None:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kv_cache_gib)))  # vLLM takes whole GiB
        from vllm import LLM

        kwargs = dict(model=model_path, dtype=dtype, max_model_len=2048, seed=seed, enable_prefix_caching=True)
        if not torch.cuda.is_available():
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = 4096
        else:
            kwargs["gpu_memory_utilization"] = 0.2  # a tool model shares its GPU with nothing it must yield to
        self.llm = LLM(**kwargs)
        self.max_tokens = max_tokens

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [
            SamplingParams(
                temperature=0.0,
                max_tokens=self.max_tokens,
                structured_outputs=StructuredOutputsParams(json=request.output_schema),
            )
            for request in requests
        ]
        prompts = [prompt_text(list(r.messages)) for r in requests]  # as trained, not the checkpoint's template
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


class MicroBatcher:
    """Turns concurrent blocking `generate_one` calls into batched `generator.generate` calls on one thread."""

    def __init__(self, generator: ObservationGenerator, max_batch: int = _MAX_BATCH) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self.batches: Counter = Counter()  # batch size -> how often (for the benchmark and tests)
        self._queue: queue.Queue[tuple[GenerationRequest, Future]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="tool-model-generate", daemon=True)
        self._thread.start()

    def generate_one(self, request: GenerationRequest) -> str:
        future: Future = Future()
        self._queue.put((request, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            waiting = [self._queue.get()]
            while len(waiting) < self.max_batch:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.batches[len(waiting)] += 1
            try:
                texts = self.generator.generate([request for request, _ in waiting])
            except Exception as error:  # every waiting call learns why; the loop keeps serving
                for _, future in waiting:
                    future.set_exception(error)
                continue
            for (_, future), text in zip(waiting, texts, strict=True):
                future.set_result(text)


class ModelActor:
    """Answers tool calls from a ToolActor model's weights; `stats` counts what happened to each call."""

    def __init__(
        self,
        generator: ObservationGenerator,
        tools: ToolResolver,
        *,
        exact: GroundedActor | None = None,
        noise_share: float = 0.0,
    ) -> None:
        self.batcher = MicroBatcher(generator)
        self.tools = tools
        self.exact = exact if exact is not None else GroundedActor(tools=tools)  # no corpus: computation only
        self.noise_share = noise_share
        self.stats: Counter = Counter()

    @property
    def corpus_size(self) -> int:
        return 0

    def set_noise_share(self, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"noise share must be in [0, 1], got {share}")
        self.noise_share = share

    def quality(self, tool: str, arguments: dict) -> Quality:
        """Noisy when the call's stable hash falls below the noise share: same call, same quality."""
        digest = hashlib.sha1(f"{tool}\0{canonical_json(arguments)}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        return "noisy" if position < self.noise_share else "useful"

    def cache_variant(self, tool: str, arguments: dict) -> str:
        """What besides the call decides the observation (its quality); part of the call cache key."""
        return self.quality(tool, arguments)

    def run(self, tool: str, arguments: dict, documents: DocumentSet) -> dict:
        """The observation of one call whose name and arguments were already validated."""
        spec = self.tools.spec(tool)
        if spec is None:
            raise BackendError(f"the model actor does not know tool {tool!r}")
        if spec.operation in COMPUTED_OPERATIONS:
            self.stats["computed"] += 1
            return self.exact.run(tool, arguments, documents)
        quality = self.quality(tool, arguments)
        self.stats[quality] += 1
        request = GenerationRequest(actor_messages(spec.tool, arguments, quality), spec.output_schema)
        text = self.batcher.generate_one(request)
        try:
            observation = json.loads(text)
        except ValueError as error:
            self.stats["invalid_json"] += 1
            raise BackendError(f"the ToolActor model wrote no JSON object ({error}): {text[:200]!r}") from None
        errors = instance_errors(spec.output_schema, observation)
        if errors:
            self.stats["invalid_schema"] += 1
            raise BackendError(f"the ToolActor model's observation breaks the output schema: {'; '.join(errors)[:300]}")
        self.stats["generated"] += 1
        return observation
