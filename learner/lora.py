"""LoRA adapters on the policy (peft), and the two views of its weights the rest of the system needs.

With `learner.lora.enabled` the learner trains only low-rank adapters: A [r, in] and B [out, r] per target
linear layer, the layer computing W x + (alpha / r) B A x. Everything outside the learner keeps seeing plain
Hugging Face weights: `merged_weights` folds each adapter into its base weight under the base name (what the
full-weight sync sends and what checkpoints hold, so vLLM and transformers load them as any model), and
`adapter_weights` is the adapter alone (what an adapter-only sync or `adapter/` in a checkpoint carries).
Both work on a plain state dict, so they apply unchanged to weights gathered from ZeRO-3 partitions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mtr.config import LoRAConfig
from mtr.weights import is_adapter_key

ADAPTER = "default"  # peft's name for the one adapter we train
_PEFT_PREFIX = "base_model.model."


def wrap(model: torch.nn.Module, config: LoRAConfig) -> torch.nn.Module:
    """`model` with adapters on `config.target_modules`; only the adapters require gradients. A target that
    names no linear layer of the model is an error that lists the ones it has."""
    from peft import LoraConfig, get_peft_model

    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    missing = sorted(set(config.target_modules) - linear)
    if missing:
        raise ValueError(
            f"learner.lora.target_modules {missing} name no linear layer of this model; it has {sorted(linear)}"
        )

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def inner_model(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a peft model (its linear layers carry the adapters), else `module`."""
    get_base = getattr(module, "get_base_model", None)
    return get_base() if callable(get_base) else module


def merged_weights(state: Mapping[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Hugging Face names -> weights with every adapter folded in: W + scaling * B @ A (computed in fp32)."""
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if is_adapter_key(name):
            continue
        plain = name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")
        prefix = name.removesuffix(".base_layer.weight")
        a = state.get(f"{prefix}.lora_A.{ADAPTER}.weight")
        b = state.get(f"{prefix}.lora_B.{ADAPTER}.weight")
        if name.endswith(".base_layer.weight") and a is not None and b is not None:
            delta = scaling * (b.float() @ a.float())
            tensor = (tensor.float() + delta).to(tensor.dtype)
        merged[plain] = tensor
    return merged


def adapter_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors alone, under peft's own names (what `PeftModel.save_pretrained` writes)."""
    return {name: tensor for name, tensor in state.items() if is_adapter_key(name)}


def scaling_of(config: LoRAConfig) -> float:
    return config.alpha / config.rank
