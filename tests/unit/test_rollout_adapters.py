"""The rollout engine's LoRA slot: a published adapter is written as a peft adapter, identified for vLLM by a
new id per version, checksummed as the learner checksums it, and stale versions are removed."""

import json

import pytest
import torch

from mtr.config import LoRAConfig
from mtr.weights import pack_state_dict, weights_checksum
from rollout.adapters import AdapterSlot

NAME = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.default.weight"


def _adapter(scale: float) -> dict[str, torch.Tensor]:
    return {NAME.format("A"): torch.full((4, 8), scale), NAME.format("B"): torch.full((8, 4), -scale)}


def test_each_version_is_a_peft_adapter_with_its_own_id(tmp_path):
    slot = AdapterSlot(LoRAConfig(rank=4, alpha=8.0, target_modules=["q_proj"]), "base-model", str(tmp_path))
    assert slot.request is None  # before any sync: the base model
    for version in (1, 2, 3):
        tensors = _adapter(0.5 * version)
        received = slot.load(pack_state_dict(tensors.items(), dtype="float32"))
        assert received == sum(t.numel() * 4 for t in tensors.values())
        assert slot.request.lora_int_id == version and slot.checksum == weights_checksum(tensors.items())
        written = slot.request.lora_path
        config = json.loads(
            (tmp_path.glob("mtr-adapters-*").__next__() / f"v{version}" / "adapter_config.json").read_text()
        )
        assert (config["r"], config["lora_alpha"], config["target_modules"]) == (4, 8.0, ["q_proj"])
    from safetensors.torch import load_file

    saved = load_file(f"{written}/adapter_model.safetensors")
    assert set(saved) == {n.replace(".default.", ".") for n in tensors}  # peft's file names
    root = next(tmp_path.glob("mtr-adapters-*"))
    assert sorted(p.name for p in root.iterdir()) == ["v2", "v3"]  # the one before the current is kept

    again = AdapterSlot(LoRAConfig(rank=4, alpha=8.0, target_modules=["q_proj"]), "base-model", str(tmp_path))
    again.use_saved(written)  # a resumed run: the checkpoint's adapter, checksummed as published
    assert again.checksum == slot.checksum


def test_a_publish_that_is_not_an_adapter_is_refused(tmp_path):
    slot = AdapterSlot(LoRAConfig(), "base-model", str(tmp_path))
    with pytest.raises(ValueError, match="not adapters"):
        slot.load(pack_state_dict([("model.embed_tokens.weight", torch.zeros(2, 2))], dtype="float32"))
