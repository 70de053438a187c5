"""Do GRPO updates reach the weights the rollout serves? Measured on the default model (SmolLM2-135M).

1. Per-weight moves of a given size (random sign) applied to the fp32 weights: the share of their bf16 copy
   (what the learner publishes and vLLM serves) that changes. A move below half a bf16 step (2^-9 of the
   weight) rounds back to the same value.
2. The learner as `mtr run` builds it (DeepSpeed ZeRO-2, torch AdamW, learner.precision bfloat16): whether
   it keeps fp32 master weights, and the share of served bf16 values one real GRPO step changes at lr 1e-5 and
   1e-6 with fresh AdamW moments, and at 1e-5 after a few SFT steps with the SFT moments kept or reset.

Writes bench/results/update_reach.json. CPU-light (a few small steps on 4 short sequences).
Run: .venv/bin/python -m bench.update_reach
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "update_reach.json"
MOVES = (1e-5, 2.5e-5, 4e-5, 1e-4)
SEQUENCES, LENGTH, PROMPT = 4, 64, 32


def perturbation_shares(model_path: str, seed: int = 0) -> dict:
    """Share of bf16 values changed when every weight moves by ±move (random sign), per move."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    changed = dict.fromkeys(MOVES, 0)
    total = 0
    for param in model.parameters():  # tied embeddings appear once
        w = param.detach()
        served = w.to(torch.bfloat16)
        sign = torch.randint(0, 2, w.shape, generator=g).float() * 2 - 1
        for move in MOVES:
            changed[move] += int(((w + move * sign).to(torch.bfloat16) != served).sum())
        total += w.numel()
    return {
        "checkpoint_dtype": json.loads((Path(model_path) / "config.json").read_text()).get("dtype"),
        "values": total,
        "share_changed_by_move": {f"{m:g}": changed[m] / total for m in MOVES},
    }


def _batch(learner, vocab: int, seed: int = 1):
    """4 random sequences (first half prompt) with on-policy old log-probs and advantages +1, -1, +1, -1."""
    import torch

    from learner.batches import TrainSequence, collate

    g = torch.Generator().manual_seed(seed)
    rows = [
        TrainSequence(torch.randint(0, vocab, (LENGTH,), generator=g).tolist(), [0] * PROMPT + [1] * (LENGTH - PROMPT))
        for _ in range(SEQUENCES)
    ]
    batch = collate(rows, "cpu")
    with torch.no_grad():
        module = learner._engine.module
        logprobs = learner._token_logprobs(module, module, batch)
    return [
        TrainSequence(r.token_ids, r.loss_mask, logprobs[i].tolist(), 1.0 if i % 2 == 0 else -1.0)
        for i, r in enumerate(rows)
    ], rows


def _masters(learner):
    """The fp32 master partitions DeepSpeed's ZeRO optimizer steps (flat), as one CPU copy."""
    import torch

    return torch.cat(
        [p.detach().float().clone().reshape(-1) for p in learner._engine.optimizer.single_partition_of_fp32_groups]
    )


def _step_effect(learner, sequences, lr: float, reset: bool, version: int) -> dict:

    before = _masters(learner)
    learner.set_learning_rate(lr)
    result = learner.grpo_step(sequences, reset_optimizer=reset)
    info = learner.publish(version, "local")
    delta = _masters(learner) - before
    return {
        "lr": lr,
        "reset_optimizer": reset,
        "lr_applied": result.learning_rate,
        "served_values_changed": info.changed,
        "served_share_changed": info.changed / info.values,
        "master_share_changed": float((delta != 0).float().mean()),
        "master_rms_move_over_lr": float(delta.pow(2).mean().sqrt()) / lr,
        "delta": delta,
        "grad_norm": result.grad_norm,
        "seconds": result.seconds,
    }


def learner_measurements(model_path: str) -> dict:
    import torch

    from learner.engine import PolicyLearner
    from mtr.config import LearnerConfig

    config = LearnerConfig(precision="bfloat16", zero_stage=2, warmup_steps=0, share_prompt_prefix=False)
    learner = PolicyLearner(model_path, config, total_steps=10)
    zero = learner._engine.optimizer
    masters = zero.single_partition_of_fp32_groups
    inspection = {
        "engine_optimizer": type(zero).__name__,
        "wraps_the_torch_adamw": zero.optimizer is learner._optimizer,
        "module_param_dtype": str(next(learner._engine.module.parameters()).dtype),
        "fp32_master_partitions": [str(p.dtype) for p in masters],
        "fp32_master_values": sum(p.numel() for p in masters),
        "adamw_param_dtypes": sorted({str(p.dtype) for g in learner._optimizer.param_groups for p in g["params"]}),
        "adamw_state_keyed_by_master_partitions": all(any(k is p for p in masters) for k in learner._optimizer.state),
    }
    vocab = learner.vocab_size
    grpo, sft_rows = _batch(learner, vocab)
    fresh = [_step_effect(learner, grpo, 1e-5, reset=True, version=1)]
    fresh.append(_step_effect(learner, grpo, 1e-6, reset=True, version=2))

    # A few SFT steps at the SFT rate, then GRPO at 1e-5 with the SFT moments kept, or reset (same start).
    learner.set_learning_rate(2e-4)
    for _ in range(3):
        learner.sft_step(sft_rows)
    learner.publish(3, "local")  # what the rollout would hold after SFT: the baseline of the next diff
    with tempfile.TemporaryDirectory(prefix="update-reach-") as tmp:
        learner.save_state(Path(tmp) / "state")
        kept = _step_effect(learner, grpo, 1e-5, reset=False, version=10)
        learner.load_state(Path(tmp) / "state")
        learner.publish(10, "local")  # the baseline of the next diff: the restored weights
        reset = _step_effect(learner, grpo, 1e-5, reset=True, version=11)
    cosine = torch.nn.functional.cosine_similarity(kept["delta"], reset["delta"], dim=0)
    for entry in (*fresh, kept, reset):
        entry.pop("delta")
    return {
        "inspection": inspection,
        "fresh_adamw_step": fresh,
        "after_3_sft_steps": {
            "kept_moments": kept,
            "reset_moments": reset,
            "cosine_kept_vs_reset_update": float(cosine),
        },
    }


def main() -> None:
    import torch

    from mtr.modelprep import resolve_model_path

    torch.set_num_threads(1)  # shared machine
    start = time.perf_counter()
    path = str(resolve_model_path("default"))
    results = {"model": path, "perturbation": perturbation_shares(path), "learner": learner_measurements(path)}
    results["seconds"] = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
