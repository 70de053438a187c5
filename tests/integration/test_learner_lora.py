"""LoRA in the learner, for real (DeepSpeed on the tiny model): only adapters train, the weights everyone else
sees are the merged ones, the KL reference is the adapters switched off, and a state resumes exactly."""

from __future__ import annotations

import pytest
import torch

from learner.batches import TrainSequence
from learner.engine import PolicyLearner
from mtr.config import LearnerConfig, LoRAConfig

pytestmark = pytest.mark.integration


def _batch(seed: int = 0, lengths=(40, 32, 24), vocab: int = 500) -> list[TrainSequence]:
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(torch.randint(0, vocab, (n,), generator=g).tolist(), [0] * (n // 2) + [1] * (n - n // 2))
        for n in lengths
    ]


def _grpo(rows: list[TrainSequence], seed: int) -> list[TrainSequence]:
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(r.token_ids, r.loss_mask, [-6.0 * m for m in r.loss_mask], float(torch.randn(1, generator=g)))
        for r in rows
    ]


def _learner(model_dir, zero_stage: int = 2, **lora) -> PolicyLearner:
    config = LearnerConfig(
        warmup_steps=0, lr=1e-2, precision="float32", zero_stage=zero_stage, lora=LoRAConfig(enabled=True, **lora)
    )
    return PolicyLearner(model_dir, config, total_steps=10)


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_only_adapters_train_and_the_merged_weights_are_what_peft_merges(tiny_model_dir, zero_stage):
    learner = _learner(tiny_model_dir, zero_stage=zero_stage, rank=4, alpha=8.0)
    trainable = {n for n, p in learner._engine.module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    before = {n: t.clone() for n, t in learner.named_weights()}
    results = [learner.sft_step(_batch()) for _ in range(4)]
    assert results[-1].loss < results[0].loss
    after = dict(learner.named_weights())
    assert set(after) == set(before) and not any(".lora_" in n or "base_layer" in n for n in after)
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed and all(n.split(".")[-2] in learner.config.lora.target_modules for n in changed)
    if zero_stage == 2:  # the learner's merge is peft's merge
        import copy

        merged = copy.deepcopy(learner._engine.module).merge_and_unload().state_dict()
        for name, tensor in after.items():
            if name in merged:
                torch.testing.assert_close(tensor, merged[name].cpu(), atol=1e-6, rtol=1e-5)
    assert learner.adapter_weights() and all(".lora_" in n for n in learner.adapter_weights())


def test_a_lora_checkpoint_loads_as_a_plain_model_with_its_adapter_beside(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    learner = _learner(tiny_model_dir)
    for _ in range(3):
        learner.sft_step(_batch())
    path = learner.save_hf(tmp_path / "ckpt")
    assert (path / "adapter" / "adapter_config.json").is_file()
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.tensor([_batch()[0].token_ids])
    with torch.no_grad():
        expected = learner._hf(input_ids=ids).logits
        got = plain(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_the_kl_reference_is_the_adapters_switched_off(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    first = learner.grpo_step(_grpo(_batch(), seed=1), clip_eps=0.2, kl_coef=0.1)
    assert first.kl == pytest.approx(0.0, abs=1e-7)  # B starts at zero: the policy is the base model
    later = [learner.grpo_step(_grpo(_batch(seed=s), seed=s), clip_eps=0.2, kl_coef=0.1) for s in (2, 3)]
    assert all(r.kl > 0 for r in later)
    assert learner._reference is None  # no second copy of the weights


def test_a_lora_state_holds_the_adapters_and_continues_exactly(tiny_model_dir, tmp_path):
    a = _learner(tiny_model_dir)
    a.sft_step(_batch())
    a.grpo_step(_grpo(_batch(seed=2), seed=2), clip_eps=0.2, kl_coef=0.1)
    a.save_state(tmp_path / "state")
    expected = a.grpo_step(_grpo(_batch(seed=3), seed=3), clip_eps=0.2, kl_coef=0.1)
    b = _learner(tiny_model_dir)
    assert b.load_state(tmp_path / "state") == 2
    got = b.grpo_step(_grpo(_batch(seed=3), seed=3), clip_eps=0.2, kl_coef=0.1)
    assert (got.loss, got.kl, got.grad_norm) == (expected.loss, expected.kl, expected.grad_norm)
    assert b.checksum("float32") == a.checksum("float32")


def test_a_target_module_the_model_lacks_is_named(tiny_model_dir):
    with pytest.raises(ValueError, match=r"target_modules \['c_attn'\] name no linear layer.*q_proj"):
        _learner(tiny_model_dir, target_modules=["q_proj", "c_attn"])
