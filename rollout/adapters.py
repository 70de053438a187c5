"""The rollout engine's LoRA slot: each published adapter version written as a peft adapter and served in place.

With adapter sync (learner.lora.sync 'adapter') a publish carries the adapter alone, a few hundred kilobytes
at rank 16 on the 135M model. It is written to shared memory as a peft adapter (`adapter_config.json` +
`adapter_model.safetensors`) and becomes the engine's current `LoRARequest`, a new integer id per version,
so vLLM loads it at the next generation without a restart or a full-weight transfer. The previous version's
files are kept until the one after (a generation already scheduled may still load them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mtr.config import LoRAConfig
from mtr.weights import PackedTensor, is_adapter_key, unpack, weights_checksum
from rollout.scratch import owned_scratch_dir

__all__ = ["AdapterSlot", "is_adapter_key"]

_ADAPTER_NAME = ".default."  # peft's name of the trained adapter inside tensor names; files leave it out


class AdapterSlot:
    def __init__(self, config: LoRAConfig, base_model: str, shared_dir: str | None) -> None:
        self.config = config
        self.base_model = base_model
        self.request = None  # vllm LoRARequest of the loaded version; None: the base model (no adapter yet)
        self._loaded: dict = {}  # the loaded adapter's tensors as published, for `checksum` when asked
        self.loads = 0
        self._root = owned_scratch_dir("mtr-adapters-", self, shared_dir)

    def load(self, packed: list[PackedTensor]) -> int:
        """Write the adapter and make it the one generations use; returns the bytes received."""
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        tensors = dict(unpack(packed))
        unknown = [name for name in tensors if not is_adapter_key(name)]
        if unknown:
            raise ValueError(f"an adapter publish holds tensors that are not adapters, e.g. {unknown[:3]}")
        self.loads += 1
        target = self._root / f"v{self.loads}"
        target.mkdir()
        # The views over the received bytes are written as they are (save_file only reads them), and the sha256
        # is left to `checksum`, which only tests and benchmarks ask for: neither is on the sync's path.
        files = {name.replace(_ADAPTER_NAME, "."): t.contiguous() for name, t in tensors.items()}
        save_file(files, str(target / "adapter_model.safetensors"))
        (target / "adapter_config.json").write_text(json.dumps(self._peft_config()))
        self._loaded = tensors
        self.request = LoRARequest(f"mtr-adapter-{self.loads}", self.loads, str(target))
        stale = self._root / f"v{self.loads - 2}"
        shutil.rmtree(stale, ignore_errors=True)
        return sum(len(item.data) for item in packed)

    def use_saved(self, directory: str | Path) -> None:
        """Serve an adapter a checkpoint saved (`adapter/` of a LoRA learner's checkpoint): a resumed run's."""
        from safetensors.torch import load_file
        from vllm.lora.request import LoRARequest

        source = Path(directory)
        if not (source / "adapter_config.json").is_file():
            raise ValueError(f"{source} holds no peft adapter (adapter_config.json is missing)")
        self.loads += 1
        target = self._root / f"v{self.loads}"
        shutil.copytree(source, target)
        tensors = load_file(str(target / "adapter_model.safetensors"))
        # As published: peft's file names leave the adapter's name out of the tensor names.
        named = {
            name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): t
            for name, t in tensors.items()
        }
        self._loaded = named
        self.request = LoRARequest(f"mtr-adapter-{self.loads}", self.loads, str(target))

    @property
    def checksum(self) -> str:
        """Of the loaded adapter as published (what the learner's checksum gives); "" before the first."""
        return weights_checksum(self._loaded.items()) if self._loaded else ""

    def _peft_config(self) -> dict:
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.base_model,
            "r": self.config.rank,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": list(self.config.target_modules),
            "bias": "none",
            "fan_in_fan_out": False,
            "inference_mode": True,
        }


def _with_adapter_name(name: str) -> str:
    return name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
