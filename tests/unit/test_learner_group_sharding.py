"""Sharding and loss-normalizer math of the data-parallel learner group (no Ray, no engine)."""

from __future__ import annotations

import pytest
import torch

from learner.engine import StepResult, TrainSequence
from learner.group import combine_results, plan_step, split_by_tokens
from learner.losses import sft_loss


def _sequences(lengths, seed: int = 0, vocab: int = 50) -> list[TrainSequence]:
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(
            token_ids=torch.randint(0, vocab, (n,), generator=g).tolist(),
            loss_mask=[0] * (n // 3) + [1] * (n - n // 3),
        )
        for n in lengths
    ]


def test_split_is_longest_first_to_the_least_loaded_rank():
    lengths = [100, 90, 60, 40, 33]
    shards = split_by_tokens(lengths, world_size=2)
    # loads as it goes: 100→r0 (100|0), 90→r1 (100|90), 60→r1 (100|150), 40→r0 (140|150), 33→r0 (173|150)
    assert shards == [[0, 3, 4], [1, 2]]
    assert sorted(i for shard in shards for i in shard) == list(range(5))
    loads = [sum(lengths[i] for i in shard) for shard in shards]
    assert max(loads) - min(loads) <= max(lengths)


def test_split_with_fewer_sequences_than_ranks_leaves_ranks_empty():
    assert split_by_tokens([7, 9], world_size=4) == [[1], [0], [], []]
    assert split_by_tokens([5, 5, 5], world_size=1) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="world_size"):
        split_by_tokens([5], world_size=0)


def test_plan_step_gives_every_rank_the_global_normalizer_and_the_same_micro_batch_count():
    sequences = _sequences([100, 90, 60, 40, 33])
    shares = plan_step(sequences, world_size=2, budget_tokens=256)
    total_masked = sum(sum(s.loss_mask) for s in sequences)
    assert [s.indices for s in shares] == [(0, 3, 4), (1, 2)]
    assert all(s.normalizer == pytest.approx(total_masked / 2) for s in shares)
    # Rank 0 needs 2 micro-batches ([100, 40] then [33]), rank 1 one ([90, 60]): both run 2.
    assert [s.micro_batches for s in shares] == [2, 2]
    assert sum(s.masked_tokens for s in shares) == total_masked

    lone = plan_step(_sequences([20]), world_size=3, budget_tokens=256)
    assert [s.indices for s in lone] == [(0,), (), ()]
    assert all(s.micro_batches == 1 for s in lone) and [s.masked_tokens for s in lone][1:] == [0, 0]


def _toy_loss(theta: torch.Tensor, rows: list[TrainSequence], normalizer: float | None) -> torch.Tensor:
    """SFT loss of a unigram "model" whose log-probs are log_softmax(theta): one shared parameter vector."""
    if not rows:
        return theta.sum() * 0.0
    width = max(len(s.token_ids) for s in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for r, s in enumerate(rows):
        ids[r, : len(s.token_ids)] = torch.tensor(s.token_ids)
        mask[r, : len(s.loss_mask)] = torch.tensor(s.loss_mask, dtype=torch.float32)
    logprobs = torch.log_softmax(theta, dim=0)[ids]  # [B,T]
    return sft_loss(logprobs, mask, normalizer)


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_rank_gradients_averaged_equal_the_single_rank_gradient(world_size):
    """What DeepSpeed does (average the ranks' gradients) reproduces the one-rank token-mean step exactly."""
    sequences = _sequences([31, 17, 64, 8, 45, 22, 9])
    theta = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    whole = _toy_loss(theta, sequences, None)
    (whole_grad,) = torch.autograd.grad(whole, theta)

    shares = plan_step(sequences, world_size, budget_tokens=256)
    losses, grads = [], []
    for share in shares:
        loss = _toy_loss(theta, [sequences[i] for i in share.indices], share.normalizer)
        losses.append(float(loss.detach()))
        grads.append(torch.autograd.grad(loss, theta)[0])
    averaged = torch.stack(grads).mean(0)
    assert torch.allclose(averaged, whole_grad, atol=1e-12)

    results = [StepResult(loss, 1.5, 10, 0.1, 0.0, 1e-3) for loss in losses]
    assert combine_results(results, shares, seconds=0.2).loss == pytest.approx(float(whole.detach()), rel=1e-12)


def test_combine_results_sums_tokens_weights_clip_fraction_and_takes_rank0_norm():
    sequences = _sequences([30, 30, 12])
    shares = plan_step(sequences, world_size=2, budget_tokens=256)
    results = [
        StepResult(loss=0.8, grad_norm=2.0, tokens=42, seconds=1.0, clip_fraction=0.5, learning_rate=1e-3),
        StepResult(loss=0.4, grad_norm=2.0, tokens=30, seconds=1.1, clip_fraction=0.0, learning_rate=1e-3),
    ]
    combined = combine_results(results, shares, seconds=1.3)
    m0, m1 = shares[0].masked_tokens, shares[1].masked_tokens
    assert combined.tokens == 72 and combined.seconds == 1.3 and combined.grad_norm == 2.0
    assert combined.loss == pytest.approx(0.6)
    assert combined.clip_fraction == pytest.approx(0.5 * m0 / (m0 + m1))
    with pytest.raises(ValueError, match="2 results for 1 ranks"):
        combine_results(results, shares[:1], seconds=0.0)
